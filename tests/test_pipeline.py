"""GroundedSAM end to end with tiny random models loaded through from_pretrained."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import supervision as sv
import torch

import grounded_sam.pipeline as pipeline_module
from grounded_sam import EverythingSettings, GroundedSAM, ImageIndex, ModelLoadError


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    rng = np.random.default_rng(0)
    img = np.full((150, 230, 3), 120, dtype=np.uint8)
    img[20:80, 30:100] = (200, 40, 40)
    img[60:140, 120:210] = (40, 190, 70)
    return np.clip(img + rng.integers(0, 20, img.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def index(tiny_gs, image) -> ImageIndex:
    return tiny_gs.index(image)


def test_index_holds_phrase_independent_state(index, image):
    assert index.size == image.shape[:2]
    assert len(index) > 0
    assert index.region_embeddings.shape[0] == len(index)
    torch.testing.assert_close(
        index.region_embeddings.norm(dim=-1), torch.ones(len(index)), atol=1e-4, rtol=0
    )
    assert index.frame_masks.shape[0] == len(index)


def test_query_result_schema(tiny_gs, index, image):
    dets = tiny_gs.query(index, "red box, green box", threshold=0.0)
    assert isinstance(dets, sv.Detections)
    assert len(dets) > 0
    n = len(dets)
    assert dets.mask.shape == (n, *image.shape[:2]) and dets.mask.dtype == bool
    assert dets.xyxy.shape == (n, 4)
    assert ((dets.confidence >= 0) & (dets.confidence <= 1)).all()
    assert set(dets.class_id.tolist()) <= {0, 1}
    for key in ("class_name", "clip_score", "sam_iou", "proposal_index"):
        assert dets.data[key].shape == (n,)
    assert set(dets.data["class_name"].tolist()) <= {"red box", "green box"}
    # each mask inside its box
    for mask, (x0, y0, x1, y1) in zip(dets.mask, dets.xyxy, strict=True):
        ys, xs = np.nonzero(mask)
        assert xs.min() >= x0 and xs.max() < x1 and ys.min() >= y0 and ys.max() < y1


def test_second_phrase_runs_no_image_side_work(tiny_gs, image, monkeypatch):
    calls = {"encoder": 0, "grid": 0, "clip_image": 0}
    predictor, scorer = tiny_gs.predictor, tiny_gs.scorer
    real_encode = predictor._encode_pixels
    real_grid = pipeline_module.generate_proposals
    real_clip = scorer.model.encode_image

    def count(name, fn):
        def wrapped(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)

        return wrapped

    monkeypatch.setattr(predictor, "_encode_pixels", count("encoder", real_encode))
    monkeypatch.setattr(pipeline_module, "generate_proposals", count("grid", real_grid))
    monkeypatch.setattr(scorer.model, "encode_image", count("clip_image", real_clip))
    idx = tiny_gs.index(image)
    assert calls == {"encoder": 1, "grid": 1, "clip_image": 1}
    tiny_gs.query(idx, "a dog")
    tiny_gs.query(idx, "a cat, a tree", top_k=1)
    assert calls == {"encoder": 1, "grid": 1, "clip_image": 1}


def test_segment_real_photo(tiny_gs, real_photo):
    from PIL import Image

    w, h = Image.open(real_photo).size
    dets = tiny_gs.segment(real_photo, ["person", "dog"], threshold=0.0)
    assert dets.mask.shape[1:] == (h, w)


def test_nothing_above_threshold_is_empty_not_error(tiny_gs, index, image):
    dets = tiny_gs.query(index, "zebra", threshold=1.0)
    assert len(dets) == 0 and dets.mask.shape == (0, *image.shape[:2])


def test_top_k_limits_per_phrase(tiny_gs, index):
    dets = tiny_gs.query(index, "thing, stuff", threshold=0.0, top_k=1)
    counts = np.bincount(dets.class_id, minlength=2)
    assert counts.max() <= 1


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"prompt": ""}, ValueError, "prompt is empty"),
        ({"prompt": "  ,  "}, ValueError, "prompt is empty"),
        ({"prompt": 7}, TypeError, "prompt must be a string"),
        ({"prompt": "dog", "threshold": 1.5}, ValueError, "threshold"),
        ({"prompt": "dog", "top_k": 0}, ValueError, "top_k"),
        ({"prompt": "dog", "refine": -1}, ValueError, "refine"),
        ({"prompt": "dog", "points": [[9999, 1]]}, ValueError, "outside the image"),
    ],
)
def test_query_bad_input(tiny_gs, index, kwargs, error, match):
    with pytest.raises(error, match=match):
        tiny_gs.query(index, **kwargs)


def test_query_needs_an_index(tiny_gs, image):
    with pytest.raises(TypeError, match="ImageIndex"):
        tiny_gs.query(image, "dog")


def test_segment_rejects_bad_prompt_before_encoding(tiny_gs, monkeypatch, tmp_path):
    monkeypatch.setattr(tiny_gs, "index", lambda *a, **k: pytest.fail("indexed"))
    with pytest.raises(ValueError, match="prompt is empty"):
        tiny_gs.segment(np.zeros((8, 8, 3), np.uint8), " ")
    with pytest.raises(FileNotFoundError):
        GroundedSAM.index(tiny_gs, tmp_path / "nope.jpg")


def test_index_save_load_round_trip(tiny_gs, index, tmp_path):
    path = index.save(tmp_path / "img.gsindex")
    loaded = ImageIndex.load(path)
    a = tiny_gs.query(index, "red box", threshold=0.0)
    b = tiny_gs.query(loaded, "red box", threshold=0.0)
    np.testing.assert_array_equal(a.mask, b.mask)
    np.testing.assert_allclose(a.confidence, b.confidence)
    (tmp_path / "junk.gsindex").write_bytes(b"not an index")
    with pytest.raises(ValueError, match="not a grounded_sam index"):
        ImageIndex.load(tmp_path / "junk.gsindex")


def test_load_index_rebuilds_the_decoder_context_once(tiny_gs, index, tmp_path, monkeypatch):
    path = index.save(tmp_path / "img.gsindex")
    plain = ImageIndex.load(path)
    assert plain.embedding.context is None  # the context is never saved
    ready = tiny_gs.load_index(path)
    assert ready.embedding.context is not None
    builds = []
    real = tiny_gs.predictor._build_context
    monkeypatch.setattr(
        tiny_gs.predictor, "_build_context", lambda *a: builds.append(1) or real(*a)
    )
    a = tiny_gs.query(ready, "red box", threshold=0.0, refine=1)
    assert builds == []  # a prepared index: no per-image decoder work at query time
    b = tiny_gs.query(plain, "red box", threshold=0.0, refine=1)
    assert builds == [1]  # an unprepared one: built once for the whole query, not per decode
    np.testing.assert_array_equal(a.mask, b.mask)
    np.testing.assert_allclose(a.confidence, b.confidence)


def test_predict_points_boxes_and_refinement(tiny_gs, index, image):
    multi = tiny_gs.predict(index, points=[[50, 50]], labels=[1])
    assert len(multi) == 3 and multi.data["granularity"].tolist() == [0, 1, 2]
    logits = multi.data["low_res_logits"][int(np.argmax(multi.confidence))][None]
    refined = tiny_gs.predict(
        index, points=[[50, 50]], box=[20, 20, 110, 90], mask_input=logits, multimask_output=False
    )
    assert len(refined) == 1 and refined.mask.shape == (1, *image.shape[:2])
    two = tiny_gs.predict(image, box=[[0, 0, 50, 50], [60, 60, 200, 140]], multimask_output=False)
    assert two.data["prompt_index"].tolist() == [0, 1]
    with pytest.raises(ValueError, match="x2 < x1"):
        tiny_gs.predict(index, box=[50, 0, 10, 10])


def test_everything_detections(tiny_gs, index, image):
    from grounded_sam.export import everything_records
    from grounded_sam.results import model_metadata

    dets = tiny_gs.everything(
        index, points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.3
    )
    assert isinstance(dets, sv.Detections)
    assert len(dets), "tiny model should give at least one mask at these thresholds"
    assert dets.mask.shape == (len(dets), *image.shape[:2]) and dets.mask.dtype == bool
    assert dets.class_id is None
    assert set(dets.data) == {"predicted_iou", "stability_score", "point_coords", "crop_box",
                              "area"}  # fmt: skip
    np.testing.assert_array_equal(dets.confidence, np.clip(dets.data["predicted_iou"], 0, 1))
    assert dets.metadata["image_size"] == image.shape[:2]
    assert dets.metadata["phrases"] == []
    assert dets.metadata["model_ids"] == model_metadata(tiny_gs.predictor, tiny_gs.model_ids)
    assert dets.metadata["model_ids"]["sam"] == tiny_gs.model_ids[0]
    sam, clip = tiny_gs.model_ids
    assert dets.metadata["model_ids"] == {"sam": sam, "sam_family": "sam", "clip": clip}
    recs = everything_records(dets, output_mode="coco_rle")
    json.dumps(recs)
    assert recs[0]["segmentation"]["size"] == list(image.shape[:2])
    with pytest.raises(TypeError, match="Unknown everything"):
        tiny_gs.everything(index, points_per_sid=4)
    with pytest.raises(TypeError, match="returns sv.Detections and has no output_mode"):
        tiny_gs.everything(index, output_mode="coco_rle")
    with pytest.raises(ValueError, match="points_per_side"):
        tiny_gs.everything(index, points_per_side=0)


def test_bfloat16_pipeline_runs(tiny_model_specs, image):
    sam, clip = tiny_model_specs
    gs = GroundedSAM.from_pretrained(
        sam=sam, clip=clip, device="cpu", dtype="bfloat16", threshold=0.0,
        proposal_settings=EverythingSettings(points_per_side=4, pred_iou_thresh=0.0,
                                             stability_score_thresh=0.3),
    )
    assert gs.predictor.dtype == torch.bfloat16
    dets = gs.segment(image, "thing")
    assert dets.mask.shape[1:] == image.shape[:2]


def test_missing_local_model_dir(tmp_path):
    with pytest.raises(ModelLoadError, match="not found"):
        GroundedSAM.from_pretrained(sam=str(tmp_path / "nope" / "sam"), device="cpu")


def test_hub_ids_offline_fail_with_a_clear_message():
    code = textwrap.dedent(
        """
        from grounded_sam import GroundedSAM, ModelLoadError
        try:
            GroundedSAM.from_pretrained(device="cpu")
        except ModelLoadError as exc:
            print("MSG:", exc)
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": "/nonexistent-hf-home"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert "MSG:" in out.stdout, out.stderr[-2000:]
    assert "facebook/sam-vit-base" in out.stdout
    assert "local" in out.stdout.lower()


@pytest.mark.gpu
def test_cuda_float16_matches_cpu(tiny_model_specs, image):
    sam, clip = tiny_model_specs
    settings = EverythingSettings(points_per_side=4, pred_iou_thresh=0.0,
                                  stability_score_thresh=0.3)
    cpu = GroundedSAM.from_pretrained(sam=sam, clip=clip, device="cpu",
                                      proposal_settings=settings, threshold=0.0)
    gpu = GroundedSAM.from_pretrained(sam=sam, clip=clip, device="cuda", dtype="float16",
                                      proposal_settings=settings, threshold=0.0)
    a = cpu.predict(image, box=[20, 20, 110, 90], multimask_output=False)
    b = gpu.predict(image, box=[20, 20, 110, 90], multimask_output=False)
    inter = (a.mask & b.mask).sum()
    union = max((a.mask | b.mask).sum(), 1)
    assert inter / union > 0.95


def test_clicked_point_reaches_sam_and_is_inside_every_mask(tiny_gs, index, monkeypatch):
    x, y = 60, 50
    seen = []
    real = tiny_gs.predictor.decode

    def spy(embedding, **kwargs):
        if kwargs.get("boxes") is not None and kwargs.get("points") is not None:
            seen.append(kwargs["labels"])
        return real(embedding, **kwargs)

    monkeypatch.setattr(tiny_gs.predictor, "decode", spy)
    dets = tiny_gs.query(index, "red box, green box", threshold=0.0, points=[[x, y]])
    assert len(dets) >= 1
    assert seen and all((lab == 1).any(1).all() for lab in seen)  # the click, with each box
    assert dets.mask[:, y, x].all()


def test_tiny_model_exemplar_negative_and_calibration(tiny_gs, index, image):
    dets = tiny_gs.query(index, exemplars=[[30, 20, 100, 80]], threshold=0.0, top_k=3)
    assert 1 <= len(dets) <= 3 and set(dets.data["class_name"]) == {"exemplar"}
    both = tiny_gs.query(
        index, "red box", negative="green box", exemplars=[[30, 20, 100, 80]],
        calibration="per_phrase", threshold=0.0,
    )  # fmt: skip
    assert set(both.data["class_name"]) <= {"red box", "exemplar"}
    assert ((both.confidence >= 0) & (both.confidence <= 1)).all()
    with pytest.raises(ValueError, match="outside the image"):
        tiny_gs.query(index, exemplars=[[0, 0, image.shape[1] + 5, 10]])
