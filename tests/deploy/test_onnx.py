"""ONNX export of SAM, checked with onnxruntime against our PyTorch predictor.

Tiny random SAM (encoder + decoder) and the full-size prompt encoder + mask decoder (the one
SAM ViT-B/L/H share: 256 channels, 64x64 embedding, 256x256 low-res masks) in the default run;
the full-size ViT-B encoder export is ``slow``.

Tolerances: onnxruntime and PyTorch run the same float32 graph with different kernels; measured
max |logit diff| ~3e-5 (tiny) on logits up to ~30. Logits must agree to 1e-3 + 1e-4 |ref| and
upscaled masks to IoU >= 0.999 (the issue's bar).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from grounded_sam.deploy.onnx import MANIFEST_NAME, ONNX_OPSET, export_sam_onnx
from grounded_sam.sam.predictor import SamPredictor
from grounded_sam.sam.types import ImageEmbedding

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from .onnx_runtime import (  # noqa: E402, F401  (fixture, helpers)
    compare_decoder,
    one_torch_thread,
    ort_session,
)

CPU = torch.device("cpu")
MEASURED: dict[str, float] = {}  # printed by conftest.report_measured (-s)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from grounded_sam.sam.factory import load_predictor
    from grounded_sam.sam.tiny import save_tiny_sam

    sam_dir = save_tiny_sam(tmp_path_factory.mktemp("tiny_sam"), structured=True)
    out = tmp_path_factory.mktemp("onnx")
    manifest = export_sam_onnx(sam_dir, out)
    return load_predictor(sam_dir, CPU, torch.float32), manifest


def _compare(predictor, embedding, session, what, **prompts):
    """ONNX outputs vs SamPredictor.decode for the same prompts (both mask modes)."""
    return compare_decoder(MEASURED, "sam", predictor, embedding, session, what, **prompts)[0]


def test_manifest_describes_the_graphs(tiny):
    predictor, manifest_path = tiny
    manifest = json.loads(manifest_path.read_text())
    assert manifest_path.name == MANIFEST_NAME
    assert manifest["opset"] == ONNX_OPSET == 17
    assert set(manifest["files"]) == {"encoder", "decoder"}
    for key in ("preprocessing", "coordinates", "postprocessing"):
        assert manifest[key]
    assert manifest["preprocessing"]["normalize"]["mean"] == [123.675, 116.28, 103.53]
    import onnx

    for name, file in manifest["files"].items():
        graph = onnx.load(str(manifest_path.parent / file))
        onnx.checker.check_model(graph)
        assert [i.name for i in graph.graph.input] == list(manifest[name]["inputs"])
        assert [o.name for o in graph.graph.output] == list(manifest[name]["outputs"])
        assert any(
            op.version == ONNX_OPSET for op in graph.opset_import if op.domain in ("", "ai.onnx")
        )


def test_encoder_matches_pytorch(tiny):
    from tests.sam.images import shapes_image

    predictor, manifest = tiny
    image = shapes_image(300, 170)
    pixels = predictor.transform.preprocess(image, CPU, torch.float32)
    encoder = ort_session(manifest.parent / "encoder.onnx")
    (ours,) = encoder.run(None, {"pixel_values": pixels.numpy()})
    ref = predictor.encode(image).embeddings.numpy()
    assert np.abs(ref).max() > 0.1
    np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=1e-4)


@pytest.fixture(scope="module")
def tiny_scene(tiny):
    from tests.sam.images import shapes_image

    predictor, manifest = tiny
    embedding = predictor.encode(shapes_image(300, 170))
    return predictor, embedding, ort_session(manifest.parent / "decoder.onnx")


def test_decoder_point_prompts_dynamic_batch(tiny_scene):
    predictor, embedding, session = tiny_scene
    for batch in (1, 3, 7):  # dynamic number of prompts
        pts = torch.rand(batch, 1, 2, generator=torch.Generator().manual_seed(batch))
        pts = pts * torch.tensor([170.0, 300.0])
        _compare(predictor, embedding, session, "points", points=pts, labels=torch.ones(batch, 1))


def test_decoder_fg_bg_points_dynamic_count(tiny_scene):
    predictor, embedding, session = tiny_scene
    pts = torch.tensor([[[40.0, 60.0], [120.0, 200.0], [90.0, 250.0]]]).expand(2, -1, -1)
    labels = torch.tensor([[1, 0, 1], [1, 1, 0]])
    _compare(predictor, embedding, session, "fg/bg points", points=pts, labels=labels)


def test_decoder_boxes_and_point_plus_box(tiny_scene):
    predictor, embedding, session = tiny_scene
    boxes = torch.tensor([[10.0, 20.0, 150.0, 280.0], [60.0, 100.0, 160.0, 200.0]])
    _compare(predictor, embedding, session, "boxes", boxes=boxes)
    pts = torch.tensor([[[80.0, 150.0]], [[100.0, 150.0]]])
    _compare(
        predictor, embedding, session, "point+box", points=pts, labels=torch.ones(2, 1), boxes=boxes
    )


def test_decoder_mask_input(tiny_scene):
    predictor, embedding, session = tiny_scene
    boxes = torch.tensor([[10.0, 20.0, 150.0, 280.0]])
    first = predictor.decode(embedding, boxes=boxes, multimask_output=False).low_res_logits
    _compare(predictor, embedding, session, "box+mask", boxes=boxes, mask=first)


def test_full_size_decoder(tmp_path):
    """SAM's real prompt encoder + mask decoder sizes (shared by ViT-B/L/H), random weights,
    on a random kept embedding (the encoder plays no part in the decoder graph)."""
    from transformers import SamConfig, SamModel

    from grounded_sam.sam.tiny import _scale_random

    config = SamConfig(
        vision_config={
            "num_hidden_layers": 1,
            "hidden_size": 64,
            "num_attention_heads": 2,
            "global_attn_indexes": [0],
            "mlp_dim": 128,
        }
    )
    torch.manual_seed(0)
    model = SamModel(config).eval()
    _scale_random(model, seed=0)
    export_sam_onnx(model, tmp_path, encoder=False)
    assert not (tmp_path / "encoder.onnx").exists()
    predictor = SamPredictor(model)
    assert predictor.transform.target_length == 1024 and predictor.transform.low_res_size == 256
    embedding = ImageEmbedding(
        embeddings=torch.randn(1, 256, 64, 64, generator=torch.Generator().manual_seed(1)),
        original_size=(480, 640),
        input_size=predictor.transform.input_size((480, 640)),
    )
    session = ort_session(tmp_path / "decoder.onnx")
    pts = torch.tensor([[[100.0, 120.0]], [[400.0, 300.0]], [[600.0, 50.0]]])
    _compare(predictor, embedding, session, "full-size points", points=pts, labels=torch.ones(3, 1))
    boxes = torch.tensor([[50.0, 60.0, 300.0, 400.0], [320.0, 10.0, 630.0, 470.0]])
    _compare(predictor, embedding, session, "full-size boxes", boxes=boxes)


@pytest.mark.slow
def test_full_size_vit_b_encoder(tmp_path):
    """The full ViT-B image encoder (random weights) exports and matches PyTorch."""
    from transformers import SamConfig, SamModel

    torch.manual_seed(0)
    model = SamModel(SamConfig()).eval()
    export_sam_onnx(model, tmp_path)
    pixels = torch.randn(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(0))
    (ours,) = ort_session(tmp_path / "encoder.onnx").run(None, {"pixel_values": pixels.numpy()})
    with torch.no_grad():
        ref = model.vision_encoder(pixels).last_hidden_state.numpy()
    MEASURED["full-size encoder"] = float(np.abs(ours - ref).max())
    np.testing.assert_allclose(ours, ref, atol=1e-3, rtol=1e-3)


def test_cli_export_onnx(tmp_path, capsys):
    from grounded_sam.cli.main import main
    from grounded_sam.sam.tiny import save_tiny_sam

    sam_dir = save_tiny_sam(tmp_path / "sam")
    out = tmp_path / "out"
    assert main(["export-onnx", "--sam", str(sam_dir), "--out", str(out), "--decoder-only"]) == 0
    printed = capsys.readouterr().out
    assert str(out / "decoder.onnx") in printed and str(out / MANIFEST_NAME) in printed
    assert not (out / "encoder.onnx").exists()
    not_sam = tmp_path / "not_sam"  # a checkpoint of no SAM family: refused before writing
    not_sam.mkdir()
    (not_sam / "config.json").write_text('{"model_type": "vit"}')
    assert main(["export-onnx", "--sam", str(not_sam), "--out", str(tmp_path / "vit_out")]) == 1
    assert "'vit'" in capsys.readouterr().err
    assert not (tmp_path / "vit_out").exists()


# -- hostile options and stale files (issue 23) -------------------------------------------------


@pytest.mark.parametrize("opset", [0, -1, 13, 99, True, "17", 17.0])
def test_opset_out_of_range_is_refused_before_loading(tmp_path, opset):
    # --opset 99 gave a traceback from torch, 13 an UnsupportedOperatorError after the load.
    from grounded_sam.deploy.onnx.exporter import MIN_OPSET, max_opset

    with pytest.raises(ValueError, match=f"from {MIN_OPSET} to {max_opset()}, got") as info:
        export_sam_onnx(tmp_path / "no_such_model", tmp_path / "out", opset=opset)
    assert repr(opset) in str(info.value)
    assert not (tmp_path / "out").exists()


def test_range_ends_export(tiny, tmp_path):
    import onnx

    from grounded_sam.deploy.onnx.exporter import MIN_OPSET, max_opset

    predictor, _ = tiny
    torch_max = torch.onnx._constants.ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET
    assert max_opset() == torch_max and MIN_OPSET <= ONNX_OPSET <= torch_max
    for opset in (MIN_OPSET, max_opset()):
        out = tmp_path / str(opset)
        manifest = export_sam_onnx(predictor.model, out, opset=opset, encoder=False)
        graph = onnx.load(str(manifest.parent / "decoder.onnx"))
        assert [op.version for op in graph.opset_import if op.domain in ("", "ai.onnx")] == [opset]


@pytest.mark.parametrize("opset", ["99", "0", "13"])
def test_cli_bad_opset_is_one_line(tmp_path, opset):
    from grounded_sam.sam.tiny import save_tiny_sam
    from tests.cli.conftest import error_lines, run_cli

    sam_dir = save_tiny_sam(tmp_path / "sam")
    out = tmp_path / "out"
    proc = run_cli(["export-onnx", "--sam", sam_dir, "--out", out, "--opset", opset])
    assert proc.returncode == 1, proc.stderr
    lines = error_lines(proc.stderr)
    assert len(lines) == 1 and "opset must be an integer from 14 to" in lines[0], proc.stderr
    assert f"got {opset}" in lines[0] and "Traceback" not in proc.stderr
    assert not out.exists()


def _graph_with_external_data(path: Path, data_name: str) -> None:
    """A one-initializer ONNX graph whose weights live in ``data_name`` beside it."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    node = helper.make_node("Add", ["x", "w"], ["y"])
    graph = helper.make_graph(
        [node],
        "stale",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 4])],
        [weight],
    )
    onnx.save_model(
        helper.make_model(graph),
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=data_name,
        size_threshold=0,
    )


def test_decoder_only_removes_a_stale_encoder(tiny, tmp_path):
    # A decoder-only export into a folder of an earlier full export left the old encoder.onnx
    # (of another model, maybe) beside the new decoder.
    predictor, full = tiny
    out = tmp_path / "out"
    out.mkdir()
    shutil.copy(full.parent / "encoder.onnx", out)
    manifest = export_sam_onnx(predictor.model, out, encoder=False)
    assert not (out / "encoder.onnx").exists()
    assert set(json.loads(manifest.read_text())["files"]) == {"decoder"}
    assert sorted(p.name for p in out.iterdir()) == ["decoder.onnx", MANIFEST_NAME]
    # an encoder with external data (a graph over 2 GB): its data file goes too, others stay
    Path(out / "notes.txt").write_text("mine")
    _graph_with_external_data(out / "encoder.onnx", "encoder_weights.bin")
    assert (out / "encoder_weights.bin").is_file()
    export_sam_onnx(predictor.model, out, encoder=False)
    assert sorted(p.name for p in out.iterdir()) == ["decoder.onnx", "notes.txt", MANIFEST_NAME]


def test_decoder_only_refuses_a_folder_named_encoder_onnx(tiny, tmp_path):
    predictor, _ = tiny
    out = tmp_path / "out"
    (out / "encoder.onnx").mkdir(parents=True)
    with pytest.raises(ValueError, match="in the way of a decoder-only export"):
        export_sam_onnx(predictor.model, out, encoder=False)
    assert sorted(p.name for p in out.iterdir()) == ["encoder.onnx"]  # nothing written
