"""ONNX export of HQ-SAM and SAM 2.1, checked with onnxruntime against our PyTorch predictors.

Per family: a tiny random model (grounded_sam.sam.tiny) exported end to end (encoder graph vs
``predictor.encode``, decoder graph vs ``predictor.decode`` for points, fg/bg points, boxes,
point + box, mask input, mask-only, several prompts, single and multimask), and the full-size
prompt encoder + mask decoder (random weights, random kept features). SAM 2's single-mask
dynamic fallback (done in the graph) is checked on a model whose token-0 masks are partly
unstable, so both branches run in one batch.

Tolerances, as for SAM (tests/deploy/test_onnx.py): logits within 1e-3 + 1e-4 |ref| (tiny
logits reach ~90 (HQ) / ~330 (SAM 2)), IoU predictions within 1e-4, upscaled masks IoU >=
0.999, encoder outputs within 1e-4 + 1e-4 |ref|. Every reference is checked to be non-trivial
(masks neither empty nor full). Run with -s to print the measured maxima.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from grounded_sam.deploy.onnx import MANIFEST_NAME, ONNX_OPSET, export_sam_onnx
from grounded_sam.sam.types import ImageEmbedding

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from .onnx_runtime import (  # noqa: E402, F401  (fixture, helpers)
    FEATURES,
    compare_decoder,
    one_torch_thread,
    ort_session,
)

CPU = torch.device("cpu")
FAMILIES = ("sam_hq", "sam2")
MEASURED: dict[str, float] = {}  # printed by conftest.report_measured (-s)


def _save_tiny(family, directory):
    from grounded_sam.sam import families

    return families.get(family).save_tiny(directory)


@pytest.fixture(scope="module", params=FAMILIES)
def tiny(request, tmp_path_factory):
    """(family, predictor, manifest path) of a tiny random model exported with its encoder."""
    from grounded_sam.sam.factory import load_predictor

    family = request.param
    model_dir = _save_tiny(family, tmp_path_factory.mktemp(family))
    manifest = export_sam_onnx(model_dir, tmp_path_factory.mktemp(f"{family}_onnx"))
    return family, load_predictor(model_dir, CPU, torch.float32), manifest


@pytest.fixture(scope="module")
def scene(tiny):
    from tests.sam.images import shapes_image

    family, predictor, manifest = tiny
    embedding = predictor.encode(shapes_image(300, 170))
    return family, predictor, embedding, ort_session(manifest.parent / "decoder.onnx")


def _compare(family, predictor, embedding, session, what, **prompts):
    """ONNX outputs vs ``predictor.decode`` for the same prompts (both mask modes; HQ-SAM also
    with ``hq_token_only``). Returns the graph's outputs."""
    what = f"{family} {what}"
    return compare_decoder(MEASURED, family, predictor, embedding, session, what, **prompts)


def test_manifest_describes_the_graphs(tiny):
    import onnx

    family, _, manifest_path = tiny
    manifest = json.loads(manifest_path.read_text())
    assert manifest_path.name == MANIFEST_NAME
    assert manifest["model_type"] == family
    assert manifest["opset"] == ONNX_OPSET
    assert set(manifest["files"]) == {"encoder", "decoder"}
    assert list(manifest["encoder"]["outputs"]) == FEATURES[family]
    assert list(manifest["decoder"]["inputs"])[: len(FEATURES[family])] == FEATURES[family]
    for key in ("preprocessing", "coordinates", "postprocessing"):
        assert manifest[key]
    for name, file in manifest["files"].items():
        graph = onnx.load(str(manifest_path.parent / file))
        onnx.checker.check_model(graph)
        assert [i.name for i in graph.graph.input] == list(manifest[name]["inputs"])
        assert [o.name for o in graph.graph.output] == list(manifest[name]["outputs"])
    if family == "sam2":
        assert manifest["preprocessing"]["normalize"]["mean"] == [0.485, 0.456, 0.406]
        assert manifest["preprocessing"]["pad"] == "none"
        assert manifest["decoder"]["single_mask"]["applied_in_graph"] is True
    else:
        assert manifest["preprocessing"]["normalize"]["mean"] == [123.675, 116.28, 103.53]


def test_encoder_matches_predictor_encode(tiny):
    from tests.sam.images import shapes_image

    family, predictor, manifest = tiny
    image = shapes_image(300, 170)
    pixels = predictor.transform.preprocess(image, CPU, torch.float32)
    ours = ort_session(manifest.parent / "encoder.onnx").run(None, {"pixel_values": pixels.numpy()})
    ref = predictor.encode(image)
    for name, got, want in zip(
        FEATURES[family], ours, (ref.embeddings, *ref.features), strict=True
    ):
        want = want.numpy()
        assert np.abs(want).max() > 0.1, name
        MEASURED[f"{family} encoder {name}"] = float(np.abs(got - want).max())
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4, err_msg=name)


def test_decoder_point_prompts_dynamic_batch(scene):
    family, predictor, embedding, session = scene
    for batch in (1, 3, 7):  # dynamic number of prompts
        pts = torch.rand(batch, 1, 2, generator=torch.Generator().manual_seed(batch))
        pts = pts * torch.tensor([170.0, 300.0])
        _compare(
            family, predictor, embedding, session, "points", points=pts, labels=torch.ones(batch, 1)
        )


def test_decoder_fg_bg_points_dynamic_count(scene):
    family, predictor, embedding, session = scene
    pts = torch.tensor([[[40.0, 60.0], [120.0, 200.0], [90.0, 250.0]]]).expand(2, -1, -1)
    labels = torch.tensor([[1, 0, 1], [1, 1, 0]])
    _compare(family, predictor, embedding, session, "fg/bg points", points=pts, labels=labels)


def test_decoder_boxes_and_point_plus_box(scene):
    family, predictor, embedding, session = scene
    boxes = torch.tensor([[10.0, 20.0, 150.0, 280.0], [60.0, 100.0, 160.0, 200.0]])
    _compare(family, predictor, embedding, session, "boxes", boxes=boxes)
    pts = torch.tensor([[[80.0, 150.0]], [[100.0, 150.0]]])
    _compare(
        family,
        predictor,
        embedding,
        session,
        "point+box",
        points=pts,
        labels=torch.ones(2, 1),
        boxes=boxes,
    )


def test_decoder_mask_input(scene):
    family, predictor, embedding, session = scene
    boxes = torch.tensor([[10.0, 20.0, 150.0, 280.0], [60.0, 100.0, 160.0, 200.0]])
    first = predictor.decode(embedding, boxes=boxes, multimask_output=False).low_res_logits
    _compare(family, predictor, embedding, session, "box+mask", boxes=boxes, mask=first)
    _compare(family, predictor, embedding, session, "mask only", mask=first)


def _sam2_with_unstable_single_masks(tmp_path):
    """The tiny SAM 2 with token 0's hypernetwork output scaled by 0.1: its masks get soft
    edges, so on these 8 clicks 7 single masks are unstable (stability 0.92-0.96 < 0.98) and
    one is stable (0.987), measured with transformers' own stability score."""
    from grounded_sam.sam.factory import load_predictor

    predictor = load_predictor(_save_tiny("sam2", tmp_path / "model"), CPU, torch.float32)
    head = predictor.model.mask_decoder.output_hypernetworks_mlps[0].proj_out
    with torch.no_grad():
        head.weight.mul_(0.1)
        head.bias.mul_(0.1)
    return predictor


def test_sam2_single_mask_dynamic_fallback_in_graph(tmp_path):
    from tests.sam.images import shapes_image

    predictor = _sam2_with_unstable_single_masks(tmp_path)
    export_sam_onnx(predictor.model, tmp_path / "onnx", encoder=False)
    embedding = predictor.encode(shapes_image(300, 170))
    session = ort_session(tmp_path / "onnx" / "decoder.onnx")
    pts = torch.rand(8, 1, 2, generator=torch.Generator().manual_seed(0))
    pts = pts * torch.tensor([170.0, 300.0])
    logits = _compare(
        "sam2",
        predictor,
        embedding,
        session,
        "unstable single masks",
        points=pts,
        labels=torch.ones(8, 1),
    )[0]
    fell_back = [any(np.array_equal(row[0], row[j]) for j in (1, 2, 3)) for row in logits]
    assert 0 < sum(fell_back) < len(fell_back), fell_back  # both branches ran


def _full_size_model(family):
    """Real prompt encoder + mask decoder sizes (256 channels, 64x64 embedding, 256x256
    masks; HQ: 768-wide ViT features as ViT-B; SAM 2: SAM 2.1's decoder) on a small encoder."""
    from grounded_sam.sam.tiny import _scale_random

    torch.manual_seed(0)
    if family == "sam_hq":
        from transformers import SamHQConfig, SamHQModel

        vision = {
            "num_hidden_layers": 1,
            "hidden_size": 64,
            "num_attention_heads": 2,
            "global_attn_indexes": [0],
            "mlp_dim": 128,
        }
        model = SamHQModel(SamHQConfig(vision_config=vision)).eval()
    else:
        from transformers import Sam2Model

        from grounded_sam.sam.tiny import tiny_sam2_config

        model = Sam2Model(tiny_sam2_config(image_size=1024, hidden=256)).eval()
    _scale_random(model, seed=0)
    if family == "sam2":
        with torch.no_grad():
            model.prompt_encoder.shared_embedding.positional_embedding.copy_(
                model.shared_image_embedding.positional_embedding
            )
    return model


@pytest.mark.parametrize("family", FAMILIES)
def test_full_size_decoder(family, tmp_path):
    """The decoder graph at released sizes, random weights, on random kept features (the
    encoder plays no part in the decoder graph)."""
    from grounded_sam.sam.factory import create_predictor

    model = _full_size_model(family)
    export_sam_onnx(model, tmp_path, encoder=False)
    assert not (tmp_path / "encoder.onnx").exists()
    predictor = create_predictor(model)
    assert predictor.transform.target_length == 1024 and predictor.transform.low_res_size == 256
    gen = torch.Generator().manual_seed(1)
    features = {
        "sam_hq": ((1, 768, 64, 64),),  # permuted below to (1, 64, 64, 768)
        "sam2": ((1, 32, 256, 256), (1, 64, 128, 128)),
    }[family]
    features = tuple(torch.randn(s, generator=gen) for s in features)
    if family == "sam_hq":
        features = (features[0].permute(0, 2, 3, 1).contiguous(),)
    embedding = ImageEmbedding(
        embeddings=torch.randn(1, 256, 64, 64, generator=gen),
        original_size=(480, 640),
        input_size=predictor.transform.input_size((480, 640)),
        features=features,
    )
    session = ort_session(tmp_path / "decoder.onnx")
    pts = torch.tensor([[[100.0, 120.0]], [[400.0, 300.0]], [[600.0, 50.0]]])
    _compare(
        family,
        predictor,
        embedding,
        session,
        "full-size points",
        points=pts,
        labels=torch.ones(3, 1),
    )
    boxes = torch.tensor([[50.0, 60.0, 300.0, 400.0], [320.0, 10.0, 630.0, 470.0]])
    _compare(family, predictor, embedding, session, "full-size boxes", boxes=boxes)


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_full_size_encoder(family, tmp_path):
    """The released encoders (HQ-SAM ViT-B; SAM 2.1 Hiera-tiny + FPN, transformers' default
    configs) with seeded random weights export and match PyTorch (~25-50 s each on 2 cores)."""
    from grounded_sam.deploy.onnx.hq import SamHQOnnxEncoder
    from grounded_sam.deploy.onnx.sam2 import Sam2OnnxEncoder
    from grounded_sam.sam.tiny import _scale_random

    torch.manual_seed(0)
    if family == "sam_hq":
        from transformers import SamHQConfig, SamHQModel

        model, wrapper = SamHQModel(SamHQConfig()).eval(), SamHQOnnxEncoder
    else:
        from transformers import Sam2Config, Sam2Model

        model, wrapper = Sam2Model(Sam2Config()).eval(), Sam2OnnxEncoder
    _scale_random(model, seed=0)
    export_sam_onnx(model, tmp_path)
    pixels = torch.randn(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(0))
    ours = ort_session(tmp_path / "encoder.onnx").run(None, {"pixel_values": pixels.numpy()})
    with torch.no_grad():
        refs = wrapper(model)(pixels)
    for name, got, want in zip(FEATURES[family], ours, refs, strict=True):
        want = want.numpy()
        assert np.abs(want).max() > 0.1, name
        MEASURED[f"{family} full-size encoder {name}"] = float(np.abs(got - want).max())
        np.testing.assert_allclose(got, want, atol=1e-3, rtol=1e-3, err_msg=name)


def test_unknown_family_is_refused_before_writing(tmp_path):
    from types import SimpleNamespace

    model = torch.nn.Linear(2, 2)
    model.config = SimpleNamespace(model_type="sam3")
    with pytest.raises(ValueError, match="'sam', 'sam_hq', 'sam2'.*'sam3'"):
        export_sam_onnx(model, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_failed_export_keeps_earlier_files(tmp_path, monkeypatch):
    from grounded_sam.deploy.onnx import sam2 as onnx_sam2

    family_dir = _save_tiny("sam2", tmp_path / "model")
    out = tmp_path / "out"
    export_sam_onnx(family_dir, out, encoder=False)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def broken(*args, **kwargs):
        raise RuntimeError("exporter crashed")

    monkeypatch.setattr(onnx_sam2, "export_sam2_graphs", broken)  # named by the registry
    with pytest.raises(RuntimeError, match="crashed"):
        export_sam_onnx(family_dir, out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no staging left


@pytest.mark.parametrize("family", FAMILIES)
def test_cli_export_onnx(family, tmp_path, capsys):
    from grounded_sam.cli.main import main

    model_dir = _save_tiny(family, tmp_path / "model")
    out = tmp_path / "out"
    assert main(["export-onnx", "--sam", str(model_dir), "--out", str(out), "--decoder-only"]) == 0
    printed = capsys.readouterr().out
    assert str(out / "decoder.onnx") in printed and str(out / MANIFEST_NAME) in printed
    assert not (out / "encoder.onnx").exists()
    assert json.loads((out / MANIFEST_NAME).read_text())["model_type"] == family


def test_hub_sam2_checkpoint_saying_sam2_video_is_exported(tmp_path, capsys):
    """facebook/sam2.1-* repos have model_type 'sam2_video'; loaded as Sam2Model they keep it."""
    from grounded_sam.cli.main import main

    model_dir = _save_tiny("sam2", tmp_path / "model")
    config = json.loads((model_dir / "config.json").read_text())
    (model_dir / "config.json").write_text(json.dumps({**config, "model_type": "sam2_video"}))
    out = tmp_path / "out"
    assert main(["export-onnx", "--sam", str(model_dir), "--out", str(out), "--decoder-only"]) == 0
    assert json.loads((out / MANIFEST_NAME).read_text())["model_type"] == "sam2"
