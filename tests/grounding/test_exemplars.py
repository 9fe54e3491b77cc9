"""Exemplars ("more like this"): the exemplar's own region and its look-alikes come back."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from grounded_sam.grounding.exemplars import embed_exemplars, exemplar_scores

from .oracle import make_lookalike_scene


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def names_of(dets, scene) -> list[str]:
    return sorted(
        max(scene.masks, key=lambda n, m=m: mask_iou(m, scene.masks[n])) for m in dets.mask
    )


# The second red square looks exactly like the first to CLIP.
LOOKALIKE = {"red square 2": {"red square": 1.0}}
SQUARE_BOX = [20, 30, 80, 90]  # around the first red square (xyxy)


@pytest.fixture
def scene():
    return make_lookalike_scene()


def test_exemplar_returns_its_own_region_and_look_alikes_only(make_engine, scene):
    gs = make_engine(scene, aliases=LOOKALIKE)
    idx = gs.index(scene.image)
    dets = gs.query(idx, exemplars=[SQUARE_BOX])
    assert names_of(dets, scene) == ["red square", "red square 2"]
    assert dets.data["class_name"].tolist() == ["exemplar"] * 2
    assert (dets.confidence > 0.9).all()
    for mask in dets.mask:
        assert max(mask_iou(mask, scene.masks[n]) for n in ("red square", "red square 2")) > 0.9
    # two exemplars of the same kind average to the same query
    two = gs.query(idx, exemplars=[SQUARE_BOX, [190, 110, 240, 160]], exemplar_label="red")
    assert names_of(two, scene) == ["red square", "red square 2"]
    assert two.data["class_name"].tolist() == ["red", "red"]


def test_exemplar_with_phrases_and_negatives(make_engine, scene):
    gs = make_engine(scene, aliases=LOOKALIKE)
    idx = gs.index(scene.image)
    dets = gs.query(idx, "green circle", exemplars=SQUARE_BOX, exemplar_label="red thing")
    assert sorted(dets.data["class_name"].tolist()) == ["green circle", "red thing", "red thing"]
    assert dets.class_id.tolist() == [0 if n == "green circle" else 1
                                      for n in dets.data["class_name"]]  # fmt: skip
    # a negative phrase vetoes exemplar matches it describes better than the exemplar does
    vetoed = gs.query(idx, "green circle", exemplars=SQUARE_BOX, negative="red square")
    assert vetoed.data["class_name"].tolist() == ["green circle"]


def test_exemplar_region_is_made_like_a_proposal(make_engine, scene):
    gs = make_engine(scene, aliases=LOOKALIKE)
    idx = gs.index(scene.image)
    emb = embed_exemplars(gs.predictor, gs.scorer, idx, np.array([SQUARE_BOX], np.float32))
    red = gs.scorer.vocab.index("red square")
    assert int(emb[0].argmax()) == red and float(emb[0, red]) == pytest.approx(1.0)


def test_exemplar_outside_the_image_is_a_clear_error(make_engine, scene):
    gs = make_engine(scene)
    idx = gs.index(scene.image)
    with pytest.raises(ValueError, match="Bad exemplar.*outside the image"):
        gs.query(idx, exemplars=[[200, 100, 400, 150]])
    with pytest.raises(ValueError, match="has no area"):
        gs.query(idx, exemplars=[[20, 30, 20, 90]])
    with pytest.raises(ValueError, match="Nothing to look for"):
        gs.query(idx, None)


def test_exemplar_scores_calibration():
    regions = torch.eye(4)[[0, 0, 1, 2, 3]]  # two look-alikes, three others
    score, cos = exemplar_scores(regions, torch.eye(4)[[0]], 100.0)
    assert cos.tolist() == [1.0, 1.0, 0.0, 0.0, 0.0]
    assert (score[:2] > 0.99).all() and (score[2:] < 0.01).all()
