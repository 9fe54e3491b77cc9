"""The pipeline picks the right objects, labels and masks when the models are oracles."""

from __future__ import annotations

import numpy as np
import pytest

from grounded_sam import EverythingSettings, GroundedSAM

from .oracle import OracleSam, OracleScorer, make_scene


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


@pytest.fixture
def scene():
    return make_scene()


@pytest.fixture
def gs(scene):
    return GroundedSAM(
        OracleSam(scene),
        OracleScorer(scene),
        proposal_settings=EverythingSettings(points_per_side=12),
        threshold=0.3,
    )


@pytest.mark.parametrize(
    "prompt",
    [
        "red square",
        "green circle",
        "blue triangle",
        "red square, blue triangle",
        ["green circle", "red square", "blue triangle"],
    ],
)
def test_returns_the_named_objects_with_their_labels(gs, scene, prompt):
    phrases = [p.strip() for p in prompt.split(",")] if isinstance(prompt, str) else prompt
    dets = gs.segment(scene.image, prompt)
    assert sorted(dets.data["class_name"].tolist()) == sorted(phrases)  # one mask each
    assert dets.mask.shape == (len(phrases), *scene.image.shape[:2])
    for name, class_id, mask, box in zip(
        dets.data["class_name"], dets.class_id, dets.mask, dets.xyxy, strict=True
    ):
        assert phrases[class_id] == name
        assert mask_iou(mask, scene.masks[name]) > 0.9
        ys, xs = np.nonzero(mask)
        np.testing.assert_allclose(box, [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    assert (dets.confidence > 0.9).all()
    assert set(dets.data) >= {"class_name", "clip_score", "sam_iou"}


def test_nothing_matches_gives_empty_detections(gs, scene):
    dets = gs.segment(scene.image, "purple elephant")
    assert len(dets) == 0
    assert dets.mask.shape == (0, *scene.image.shape[:2])
    assert dets.data["class_name"].shape == (0,)


def test_background_phrase_alone_is_not_an_object(gs, scene):
    dets = gs.segment(scene.image, "red square, purple elephant")
    assert dets.data["class_name"].tolist() == ["red square"]


def test_threshold_filters(gs, scene):
    idx = gs.index(scene.image)
    assert len(gs.query(idx, "red square", threshold=0.99)) == 1
    assert len(gs.query(idx, "purple elephant", threshold=0.0)) >= 1  # everything passes 0


def test_point_prompt_mixed_with_text(gs, scene):
    idx = gs.index(scene.image)
    both = gs.query(idx, "red square, green circle")
    assert len(both) == 2
    near_disc = gs.query(idx, "red square, green circle", points=[[170, 60]])
    assert near_disc.data["class_name"].tolist() == ["green circle"]
    not_disc = gs.query(idx, "red square, green circle", points=[[170, 60]], point_labels=[0])
    assert not_disc.data["class_name"].tolist() == ["red square"]


def test_second_query_reuses_the_index(gs, scene):
    idx = gs.index(scene.image)
    sam, scorer = gs.predictor, gs.scorer
    enc, dec, reg = sam.encoder_calls, sam.decoder_calls, scorer.region_calls
    assert enc == 1 and reg == 1
    gs.query(idx, "red square")
    gs.query(idx, "blue triangle, green circle")
    assert sam.encoder_calls == enc  # no image encoder pass
    assert scorer.region_calls == reg  # no CLIP image pass
    # box re-prompts were decoded by index() (prefetch_boxes): a query needs no decoder pass
    assert sam.decoder_calls == dec


def test_lazy_box_decodes_are_kept_in_the_index(gs, scene):
    gs.prefetch_boxes = False
    idx = gs.index(scene.image)
    sam = gs.predictor
    dec = sam.decoder_calls
    first = gs.query(idx, "red square")
    # one box decode + `refine` passes for the new region, never the grid again
    assert sam.decoder_calls == dec + 1 + gs.refine
    again = gs.query(idx, "red square")
    assert sam.decoder_calls == dec + 1 + gs.refine  # the region is not decoded twice
    np.testing.assert_array_equal(first.mask, again.mask)
    assert int(idx.box_decodes[gs.refine].done.sum()) == 1
