"""Clicks reach SAM: chosen regions are re-prompted with their box and the clicks inside."""

from __future__ import annotations

import numpy as np
import torch

from grounded_sam.grounding.clicks import clicks_in_boxes, honours_clicks

from .oracle import make_scene


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def test_click_decides_the_mask_when_the_box_alone_is_ambiguous(make_engine):
    scene = make_scene()
    # a box around the disc makes this SAM return the triangle, as real SAM sometimes
    # returns a neighbour for a box; only a click can fix that
    gs = make_engine(scene, box_confusions={"green circle": "blue triangle"})
    idx = gs.index(scene.image)
    boxed = gs.query(idx, "green circle")
    assert mask_iou(boxed.mask[0], scene.masks["blue triangle"]) > 0.9  # the test can fail
    x, y = 170, 60
    dets = gs.query(idx, "green circle", points=[[x, y]])
    assert gs.predictor.point_box_calls > 0  # the click went to SAM with the box
    assert dets.data["class_name"].tolist() == ["green circle"]
    assert dets.mask[0, y, x]
    assert mask_iou(dets.mask[0], scene.masks["green circle"]) > 0.9


def test_background_click_inside_the_box_reaches_sam(make_engine):
    scene = make_scene()
    gs = make_engine(scene)
    idx = gs.index(scene.image)
    # a background click on the square excludes it; the disc is unaffected
    dets = gs.query(idx, "red square, green circle", points=[[170, 60], [50, 60]],
                    point_labels=[1, 0])  # fmt: skip
    assert dets.data["class_name"].tolist() == ["green circle"]
    assert dets.mask[0, 60, 170] and not dets.mask[0, 60, 50]


def test_clicks_in_boxes_pads_clicks_outside_each_box():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]])
    pts = torch.tensor([[5.0, 5.0], [25.0, 25.0], [8.0, 2.0]])
    lab = torch.tensor([1, 1, 0])
    p, lbl = clicks_in_boxes(boxes, pts, lab)
    assert p.shape == (2, 3, 2)
    assert lbl.tolist() == [[1, -1, 0], [-1, 1, -1]]


def test_honours_clicks():
    m = torch.zeros(2, 10, 10, dtype=torch.bool)
    m[0, :5, :5] = True
    m[1, 5:, 5:] = True
    pts = torch.tensor([[2.0, 2.0], [7.0, 7.0]])
    assert honours_clicks(m, pts[:1], torch.tensor([1])).tolist() == [True, False]
    assert honours_clicks(m, pts, torch.tensor([1, 0])).tolist() == [True, False]
    assert honours_clicks(m, pts, torch.tensor([1, 1])).tolist() == [True, True]
