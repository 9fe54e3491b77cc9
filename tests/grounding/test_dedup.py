"""One object, one detection: parts of a same-label whole, and top_k after de-duplication."""

from __future__ import annotations

import numpy as np
import torch

from grounded_sam.grounding.dedup import (
    DEFAULT_PART_THRESH,
    decode_until_distinct,
    limit_per_phrase,
    remove_parts,
)
from grounded_sam.grounding.selection import Selection

from .oracle import make_house_scene


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def names_of(dets, scene) -> list[str]:
    return sorted(
        max(scene.masks, key=lambda n, m=m: mask_iou(m, scene.masks[n])) for m in dets.mask
    )


# A window looks like a house to CLIP (a part matches its whole's name); the second house
# matches "house" a little less well than the first.
ALIASES = {"window": {"house": 1.0}, "house 2": {"house": 1.0, "an object": 0.94}}


def test_part_of_a_same_label_whole_is_a_duplicate_unless_parts_are_asked_for(make_engine):
    scene = make_house_scene()
    gs = make_engine(scene, aliases=ALIASES, top_k=None)
    idx = gs.index(scene.image)
    # the window and the house overlap far less than the mask NMS threshold
    assert mask_iou(scene.masks["window"], scene.masks["house"]) < gs.mask_nms_thresh
    assert names_of(gs.query(idx, "house"), scene) == ["house", "house 2"]
    with_parts = gs.query(idx, "house", keep_parts=True)
    assert names_of(with_parts, scene) == ["house", "house 2", "window"]
    assert with_parts.data["class_name"].tolist() == ["house"] * 3
    # containment must exceed part_thresh: at 1.0 nothing is a part
    assert len(gs.query(idx, "house", part_thresh=1.0)) == 3


def test_parts_with_another_label_are_kept(make_engine):
    scene = make_house_scene()
    gs = make_engine(scene, aliases={"house 2": {"house": 1.0, "an object": 0.94}})
    dets = gs.segment(scene.image, "house, window")
    assert names_of(dets, scene) == ["house", "house 2", "window"]


def test_top_k_counts_distinct_objects(make_engine):
    scene = make_house_scene()
    gs = make_engine(scene, aliases=ALIASES)
    idx = gs.index(scene.image)
    # the two best "house" candidates are the house and its window (equal scores); counting
    # them before de-duplication would return one house although two exist
    dets = gs.query(idx, "house", top_k=2)
    assert names_of(dets, scene) == ["house", "house 2"]
    assert names_of(gs.query(idx, "house", top_k=1), scene) == ["house"]


def test_remove_parts_keeps_wholes_and_other_labels():
    m = torch.zeros(4, 10, 10, dtype=torch.bool)
    m[0, :8, :8] = True  # whole
    m[1, 2:5, 2:5] = True  # part of 0 (fully inside)
    m[2, 6:10, 6:10] = True  # 4 of its 16 pixels inside 0: not a part
    m[3, 2:5, 2:5] = True  # same pixels as 1, other label
    labels = torch.tensor([0, 0, 0, 1])
    assert remove_parts(m, labels).tolist() == [0, 2, 3]
    assert remove_parts(m, labels, part_thresh=0.2).tolist() == [0, 3]
    assert 0.5 < DEFAULT_PART_THRESH < 1.0
    # identical same-label masks: the first is kept
    assert remove_parts(m[[1, 1]], torch.tensor([0, 0])).tolist() == [0]


def test_limit_per_phrase_keeps_order_and_counts_per_phrase():
    sel = Selection(
        region=torch.tensor([5, 3, 9, 1, 7]),
        phrase=torch.tensor([0, 1, 0, 0, 1]),
        score=torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5]),
    )
    assert limit_per_phrase(sel, 2).tolist() == [0, 1, 2, 4]
    assert limit_per_phrase(sel, None).tolist() == [0, 1, 2, 3, 4]


def test_candidates_are_decoded_in_rounds_only_while_a_phrase_is_short():
    sel = Selection(
        region=torch.arange(6),
        phrase=torch.tensor([0, 0, 1, 0, 1, 0]),
        score=torch.linspace(0.9, 0.4, 6),
    )
    rounds = []
    duplicates = {1}  # candidate 1 is a duplicate of candidate 0

    def decode(rows):
        rounds.append(rows.tolist())

    def distinct(rows):
        return rows[~torch.isin(rows, torch.tensor(sorted(duplicates)))]

    assert decode_until_distinct(sel, 2, decode, distinct).tolist() == [0, 2, 3, 4]
    # round 1: the best 2 per phrase; phrase 0 lost one to de-duplication -> depth 4
    assert rounds == [[0, 1, 2, 4], [3, 5]]
    rounds.clear()
    duplicates.clear()
    assert decode_until_distinct(sel, 2, decode, distinct).tolist() == [0, 1, 2, 4]
    assert rounds == [[0, 1, 2, 4]]  # all distinct: one round, as many boxes as top_k
    rounds.clear()
    assert len(decode_until_distinct(sel, None, decode, distinct)) == 6
    assert rounds == [[0, 1, 2, 3, 4, 5]]


def test_top_k_query_decodes_top_k_boxes_when_they_are_distinct(make_engine):
    scene = make_house_scene()
    gs = make_engine(scene, aliases={"house 2": {"house": 1.0, "an object": 0.94}})
    gs.prefetch_boxes = False  # boxes decoded lazily by the query (else all in index())
    idx = gs.index(scene.image)
    decoded = []
    real = gs.predictor.decode

    def spy(embedding, **kwargs):
        if kwargs.get("mask_input") is None:
            decoded.append(int(kwargs["boxes"].shape[0]))
        return real(embedding, **kwargs)

    gs.predictor.decode = spy
    assert len(gs.query(idx, "house", top_k=1)) == 1
    assert decoded == [1]
