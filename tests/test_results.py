"""Detections.metadata: image size, phrases and model ids, set in one place (results.py)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from grounded_sam.export.records import detections_to_json
from grounded_sam.results import detection_metadata, model_metadata, sam_family


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    img = np.full((90, 140, 3), 110, dtype=np.uint8)  # H 90, W 140: not square on purpose
    img[10:50, 20:70] = (210, 40, 40)
    img[40:85, 80:130] = (40, 190, 70)
    return img


def expected_models(gs) -> dict[str, str]:
    sam, clip = gs.model_ids
    return {"sam": sam, "sam_family": "sam", "clip": clip}


def test_query_metadata_has_size_phrases_and_models(tiny_gs, image) -> None:
    index = tiny_gs.index(image)
    dets = tiny_gs.query(index, "red box, green box", threshold=0.0)
    assert len(dets) > 0 and dets.tracker_id is None
    assert dets.metadata == {
        "image_size": (90, 140),
        "width": 140,
        "height": 90,
        "phrases": ["red box", "green box"],
        "model_ids": expected_models(tiny_gs),
    }
    assert all(tiny_gs.model_ids) and tiny_gs.model_ids[0] in dets.metadata["model_ids"]["sam"]
    json.dumps(dets.metadata)  # JSON-ready
    # an exemplar adds its label; an empty result says the same
    ex = tiny_gs.query(index, "red box", exemplars=[[20, 10, 70, 50]], exemplar_label="jar")
    assert ex.metadata["phrases"] == ["red box", "jar"]
    none = tiny_gs.query(index, "red box", threshold=1.0)
    assert len(none) == 0 and none.metadata["image_size"] == (90, 140)
    # kept by supervision's indexing
    assert dets[:1].metadata == dets.metadata


def test_predict_metadata(tiny_gs, image) -> None:
    dets = tiny_gs.predict(image, points=[[30, 20]], multimask_output=False)
    assert dets.metadata == {
        "image_size": (90, 140),
        "width": 140,
        "height": 90,
        "phrases": ["prompt"],
        "model_ids": expected_models(tiny_gs),
    }
    assert dets.tracker_id is None


def test_metadata_does_not_change_the_json_document(tiny_gs, image) -> None:
    dets = tiny_gs.query(tiny_gs.index(image), "red box", threshold=0.0)
    doc = detections_to_json(dets, image.shape[:2], phrases=["red box"])
    bare = dets[:]
    bare.metadata = {}
    assert doc == detections_to_json(bare, image.shape[:2], phrases=["red box"])
    assert "metadata" not in doc and "image_size" not in doc


def test_family_comes_from_the_predictor_or_its_config() -> None:
    def config(model_type: str) -> SimpleNamespace:
        return SimpleNamespace(model=SimpleNamespace(config=SimpleNamespace(model_type=model_type)))

    assert sam_family(config("sam_hq")) == "sam_hq"
    assert sam_family(config("sam2_video")) == "sam2"
    assert sam_family(SimpleNamespace(family="sam2")) == "sam2"
    assert sam_family(SimpleNamespace(family=SimpleNamespace(name="sam3"))) == "sam3"
    assert sam_family(None) == ""
    assert model_metadata(config("sam"), ("vit_b", "ViT-B-16:x")) == {
        "sam": "vit_b", "sam_family": "sam", "clip": "ViT-B-16:x"
    }  # fmt: skip
    meta = detection_metadata((3, 5), ("a",))
    assert meta == {
        "image_size": (3, 5),
        "width": 5,
        "height": 3,
        "phrases": ["a"],
        "model_ids": {"sam": "", "sam_family": "", "clip": ""},
    }
    pair = detection_metadata((3, 5), [], ("vit_b", "c"))["model_ids"]  # a (sam, clip) pair
    assert pair == {"sam": "vit_b", "sam_family": "", "clip": "c"}
