"""Negative phrases and calibration modes: pure functions and the oracle scene."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from grounded_sam.grounding.candidates import score_candidates
from grounded_sam.grounding.options import QueryOptions
from grounded_sam.grounding.scoring import best_is_negative, calibrate, score_phrases

from .oracle import make_scene


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


# Every object also looks like a "shape"; the object's own name matches it best.
SHAPES = {n: {n: 1.0, "shape": 0.8} for n in ("red square", "green circle", "blue triangle")}


def test_negative_phrase_drops_its_region_and_keeps_the_others(make_engine):
    scene = make_scene()
    gs = make_engine(scene, aliases=SHAPES)
    idx = gs.index(scene.image)
    all_shapes = gs.query(idx, "shape")
    assert len(all_shapes) == 3  # the test can fail: the triangle is a "shape" without negatives
    dets = gs.query(idx, "shape", negative="blue triangle")
    assert len(dets) == 2
    for mask in dets.mask:
        assert mask_iou(mask, scene.masks["blue triangle"]) < 0.1
    kept = {max(scene.masks, key=lambda n, m=m: mask_iou(m, scene.masks[n])) for m in dets.mask}
    assert kept == {"red square", "green circle"}
    assert dets.data["class_name"].tolist() == ["shape", "shape"]
    # also through segment(), with a list, and when nothing else would filter it (threshold 0)
    dets0 = gs.segment(scene.image, "shape", negative=["blue triangle", "saucer"], threshold=0.0)
    assert all(mask_iou(m, scene.masks["blue triangle"]) < 0.1 for m in dets0.mask)


def test_negative_phrase_lowers_joint_scores_like_a_background_phrase(make_engine):
    scene = make_scene()
    gs = make_engine(scene, aliases=SHAPES)
    idx = gs.index(scene.image)
    plain = gs.query(idx, "shape")
    with_neg = gs.query(idx, "shape", negative="red square")
    assert len(with_neg) == 2
    # the green circle's confidence is unchanged: "red square" is not similar to it
    circle = lambda d: d.confidence[  # noqa: E731
        np.argmax([mask_iou(m, scene.masks["green circle"]) for m in d.mask])
    ]
    assert circle(with_neg) == pytest.approx(circle(plain), abs=1e-6)


def test_bad_negatives_are_clear_errors(make_engine):
    scene = make_scene()
    gs = make_engine(scene)
    with pytest.raises(ValueError, match="both a phrase and a negative"):
        gs.segment(scene.image, "red square", negative="Red Square")
    assert QueryOptions(negative=" ").negatives_for(["a"]) == []
    negatives = QueryOptions(negative="handle,  saucer").negatives_for(["cup"])
    assert negatives == ["handle", "saucer"]


def test_best_is_negative_is_decided_on_similarity():
    cos = torch.tensor([[0.30, 0.20, 0.1], [0.20, 0.25, 0.1], [0.2, 0.2, 0.1]])
    assert best_is_negative(cos, 1, 1).tolist() == [False, True, True]
    assert best_is_negative(cos, 1, 0).tolist() == [False, False, False]


def test_per_phrase_scores_do_not_depend_on_other_phrases():
    torch.manual_seed(0)
    cos = torch.rand(50, 7) * 0.4  # columns: 3 phrases, 1 negative, 3 background
    alone = score_phrases(torch.cat([cos[:, :1], cos[:, 3:]], 1), 1, 100.0, "per_phrase")
    together = score_phrases(cos, 3, 100.0, "per_phrase")
    torch.testing.assert_close(together[:, 0], alone[:, 0])
    joint_alone = score_phrases(torch.cat([cos[:, :1], cos[:, 3:]], 1), 1, 100.0, "joint")
    joint = score_phrases(cos, 3, 100.0, "joint")
    assert (joint[:, 0] <= joint_alone[:, 0] + 1e-7).all()  # joint does depend on them
    assert (joint_alone[:, 0] - joint[:, 0]).max() > 0.1
    torch.testing.assert_close(joint, calibrate(cos, 3, 100.0))  # today's calibration kept
    # the label (best phrase) is the same under both modes
    assert torch.equal(joint.argmax(1), together.argmax(1))


def test_per_phrase_confidence_is_independent_on_the_oracle_scene(make_engine):
    scene = make_scene()
    # the red square looks a bit like "a red shape" too, so the two phrases compete in joint
    aliases = {"red square": {"red square": 1.0, "red shape": 0.99}}
    gs = make_engine(scene, aliases=aliases)
    idx = gs.index(scene.image)
    conf = {}
    for mode in ("joint", "per_phrase"):
        alone = gs.query(idx, "red square", calibration=mode)
        both = gs.query(idx, "red square, red shape, green circle", calibration=mode)
        assert alone.data["class_name"].tolist() == ["red square"]
        square = both.data["class_name"] == "red square"
        assert square.sum() == 1  # still one detection, labeled with the single best phrase
        assert "red shape" not in both.data["class_name"].tolist()
        conf[mode] = (float(alone.confidence[0]), float(both.confidence[square][0]))
    assert conf["joint"][1] < conf["joint"][0] - 0.1  # joint: another phrase lowers it
    assert conf["per_phrase"][1] == pytest.approx(conf["per_phrase"][0], abs=1e-6)


def test_unknown_calibration_is_a_clear_error(make_engine):
    scene = make_scene()
    gs = make_engine(scene)
    with pytest.raises(ValueError, match="calibration must be one of 'joint', 'per_phrase'"):
        gs.segment(scene.image, "red square", calibration="softmax")


def test_score_candidates_exemplar_column_and_its_negative_veto():
    cos = torch.tensor([[0.3, 0.1, 0.1], [0.1, 0.35, 0.1]])  # 1 phrase, 1 negative, 1 bg
    ex = torch.tensor([0.2, 0.99])
    scores, rejected = score_candidates(cos, 1, 1, 100.0, "joint", ex)
    assert scores.shape == (2, 2)
    # region 0: best label is the phrase, negative is weaker; region 1: the exemplar wins but
    # the negative ("vs background" probability ~1) beats it
    assert rejected.tolist() == [False, True]
    _, rejected = score_candidates(cos, 1, 0, 100.0, "joint", ex)
    assert rejected.tolist() == [False, False]
