"""``everything()``'s results: proposals -> ``sv.Detections`` -> Meta's records
(``grounded_sam.sam.everything_results``). Parity of the records with Meta's generator is in
``test_everything.py`` (it compares through :func:`proposals_to_records`, which is these two
conversions chained)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import supervision as sv
import torch

from grounded_sam.export.records import everything_to_detections
from grounded_sam.sam.everything import EverythingSettings, generate_proposals
from grounded_sam.sam.everything_results import (
    EVERYTHING_DATA_KEYS,
    everything_records,
    proposals_to_detections,
    proposals_to_records,
)
from grounded_sam.sam.predictor import SamPredictor
from grounded_sam.sam.proposals import Proposals
from grounded_sam.utils.masks import decode_rle

from . import everything_scenes
from .everything_scenes import shapes_scene


@pytest.fixture(scope="module")
def structured_predictor(sam_model) -> SamPredictor:
    return everything_scenes.structured_predictor(sam_model)


@pytest.fixture(scope="module")
def scene_230x150() -> np.ndarray:
    return shapes_scene(230, 150, seed=0)


@pytest.fixture(scope="module")
def crop_proposals(structured_predictor, scene_230x150) -> Proposals:
    return everything_scenes.proposals_with_crops(structured_predictor, scene_230x150)


@pytest.fixture(scope="module")
def dets(crop_proposals) -> sv.Detections:
    return proposals_to_detections(crop_proposals, metadata={"model_ids": {"sam": "tiny"}})


def test_detections_fields(dets, crop_proposals, scene_230x150):
    p = crop_proposals
    h, w = scene_230x150.shape[:2]
    n = len(p)
    assert len(dets) == n >= 3
    assert dets.mask.shape == (n, h, w) and dets.mask.dtype == bool
    np.testing.assert_array_equal(dets.mask, p.full_masks().numpy())
    assert dets.class_id is None and set(dets.data) == set(EVERYTHING_DATA_KEYS)
    # tight boxes, x2/y2 exclusive
    for i in range(n):
        ys, xs = np.nonzero(dets.mask[i])
        assert dets.xyxy[i].tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
    np.testing.assert_array_equal(dets.data["area"], dets.mask.reshape(n, -1).sum(1))
    np.testing.assert_array_equal(dets.data["predicted_iou"], p.predicted_iou.numpy())
    np.testing.assert_array_equal(dets.confidence, np.clip(p.predicted_iou.numpy(), 0, 1))
    np.testing.assert_array_equal(dets.data["stability_score"], p.stability_score.numpy())
    np.testing.assert_array_equal(dets.data["point_coords"], p.point_coords.numpy())
    assert dets.data["point_coords"].shape == (n, 2)
    # crop boxes: xyxy, exclusive, the crop each mask was decoded in; at least one not whole
    np.testing.assert_array_equal(dets.data["crop_box"], p.crop_boxes[p.crop_index].numpy())
    assert (dets.data["crop_box"] != [0, 0, w, h]).any()
    assert dets.metadata == {"model_ids": {"sam": "tiny"}, "image_size": (h, w)}


def test_detections_behave_as_detections(dets):
    """Filtering and indexing (what a user does with a result) keep every field aligned."""
    top = dets[dets.confidence >= np.median(dets.confidence)]
    assert 0 < len(top) <= len(dets)
    for key in EVERYTHING_DATA_KEYS:
        assert len(top.data[key]) == len(top)
    assert everything_records(top, "coco_rle")  # a filtered result still converts


@pytest.mark.parametrize("output_mode", ["binary_mask", "uncompressed_rle", "coco_rle"])
def test_records_of_detections(dets, output_mode):
    records = everything_records(dets, output_mode)
    assert len(records) == len(dets)
    for i, r in enumerate(records):
        assert list(r) == ["segmentation", "area", "bbox", "predicted_iou", "point_coords",
                           "stability_score", "crop_box"]  # fmt: skip
        seg = r["segmentation"]
        mask = np.asarray(seg) if output_mode == "binary_mask" else decode_rle(seg)
        np.testing.assert_array_equal(mask, dets.mask[i])
        x1, y1, x2, y2 = dets.xyxy[i].tolist()
        assert r["bbox"] == [x1, y1, x2 - 1 - x1, y2 - 1 - y1]  # Meta's inclusive XYWH
        cx1, cy1, cx2, cy2 = dets.data["crop_box"][i].tolist()
        assert r["crop_box"] == [cx1, cy1, cx2 - cx1, cy2 - cy1]  # the crop's XYWH
        assert r["area"] == int(dets.mask[i].sum()) and isinstance(r["area"], int)
        assert r["predicted_iou"] == float(dets.data["predicted_iou"][i])
        assert r["point_coords"] == [dets.data["point_coords"][i].tolist()]
    if output_mode != "binary_mask":
        assert json.loads(json.dumps(records)) == records


def test_records_round_trip_through_export(dets, scene_230x150):
    back = everything_to_detections(everything_records(dets, "coco_rle"), scene_230x150.shape[:2])
    np.testing.assert_array_equal(back.mask, dets.mask)
    np.testing.assert_array_equal(back.xyxy, dets.xyxy)
    np.testing.assert_array_equal(back.confidence, dets.data["predicted_iou"])


def test_proposals_to_records_is_the_two_conversions(crop_proposals, dets):
    chained = everything_records(dets, "coco_rle")
    assert proposals_to_records(crop_proposals, "coco_rle") == chained


def test_small_region_removal_in_detections(crop_proposals):
    cleaned = proposals_to_detections(crop_proposals, min_mask_region_area=200)
    assert 0 < len(cleaned) <= len(crop_proposals)
    ious = cleaned.data["predicted_iou"]
    assert (ious[:-1] >= ious[1:]).all()
    np.testing.assert_array_equal(
        cleaned.data["area"], cleaned.mask.reshape(len(cleaned), -1).sum(1)
    )


def test_empty(structured_predictor, scene_230x150):
    p = generate_proposals(
        structured_predictor,
        scene_230x150,
        EverythingSettings(points_per_side=4, pred_iou_thresh=1.0),
    )
    empty = proposals_to_detections(p, min_mask_region_area=10)
    assert len(empty) == 0 and empty.mask.shape == (0, *scene_230x150.shape[:2])
    assert set(empty.data) == set(EVERYTHING_DATA_KEYS) and empty.data["crop_box"].shape == (0, 4)
    assert everything_records(empty, "coco_rle") == []


def test_bad_arguments(crop_proposals, dets):
    with pytest.raises(ValueError, match="output_mode must be"):
        everything_records(dets, "png")
    with pytest.raises(ValueError, match="output_mode must be"):
        proposals_to_records(crop_proposals, output_mode="png")
    with pytest.raises(ValueError, match="min_mask_region_area must be >= 0"):
        proposals_to_detections(crop_proposals, min_mask_region_area=-1)
    with pytest.raises(ValueError, match=r"nms_thresh must be in \[0, 1\]"):
        proposals_to_detections(crop_proposals, nms_thresh=1.5)
    plain = sv.Detections(xyxy=dets.xyxy, mask=dets.mask)
    with pytest.raises(ValueError, match="no data keys .*everything_records converts"):
        everything_records(plain)
    with pytest.raises(ValueError, match="no masks"):
        everything_records(sv.Detections(xyxy=dets.xyxy, data=dict(dets.data)))


def test_more_masks_than_the_mask_budget_is_a_clear_error():
    """Past the call's full-resolution mask budget, the error names the knobs to turn (and
    comes before any mask is upscaled)."""
    from grounded_sam import limits
    from grounded_sam.sam.proposals import MaskFrame

    h, w = 480, 640
    n = limits.MAX_MASK_PIXELS // (h * w) + 1  # 3496 masks: one more than fits
    p = Proposals(
        low_res_logits=torch.zeros(1, 256, 256).expand(n, -1, -1),
        crop_index=torch.zeros(n, dtype=torch.long),
        crop_boxes=torch.tensor([[0, 0, w, h]]),
        crop_input_sizes=[(768, 1024)],
        boxes=torch.zeros(n, 4),
        predicted_iou=torch.ones(n),
        stability_score=torch.ones(n),
        point_coords=torch.zeros(n, 2),
        original_size=(h, w),
        frame=MaskFrame(1024, 256),
    )
    with pytest.raises(ValueError, match=rf"{n} automatic masks of a 640x480 image") as err:
        proposals_to_detections(p)
    message = str(err.value)
    assert f"at most {n - 1} masks fit" in message
    for knob in ("points_per_side", "crop_n_layers", "pred_iou_thresh", "stability_score_thresh"):
        assert knob in message


# -- proposals_to_records (the two conversions chained) ----------------------------------------


def test_records_coco_rle_json(crop_proposals, scene_230x150):
    records = proposals_to_records(crop_proposals, output_mode="coco_rle")
    assert len(records) == len(crop_proposals)
    text = json.dumps(records)
    assert json.loads(text) == records
    h, w = scene_230x150.shape[:2]
    for r, p_iou in zip(records, crop_proposals.predicted_iou.tolist(), strict=True):
        assert set(r) == {
            "segmentation",
            "area",
            "bbox",
            "predicted_iou",
            "stability_score",
            "point_coords",
            "crop_box",
        }
        assert isinstance(r["segmentation"]["counts"], str) and r["segmentation"]["size"] == [h, w]
        mask = decode_rle(r["segmentation"])
        assert isinstance(r["area"], int) and r["area"] == int(mask.sum())
        ys, xs = np.nonzero(mask)
        assert r["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min(), ys.max() - ys.min()]
        assert all(isinstance(v, float) for v in r["bbox"] + r["crop_box"])
        assert len(r["point_coords"]) == 1 and len(r["point_coords"][0]) == 2
        assert r["predicted_iou"] == pytest.approx(p_iou)
        x, y, cw, ch = r["crop_box"]
        assert 0 <= x and 0 <= y and x + cw <= w and y + ch <= h


def test_records_binary_match_full_masks(crop_proposals):
    records = proposals_to_records(crop_proposals)
    full = crop_proposals.full_masks().numpy()
    for r, m in zip(records, full, strict=True):
        assert r["segmentation"].dtype == bool and np.array_equal(r["segmentation"], m)


def test_small_region_removal_keeps_predicted_iou_order(crop_proposals):
    records = proposals_to_records(crop_proposals, min_mask_region_area=200)
    ious = [r["predicted_iou"] for r in records]
    assert ious == sorted(ious, reverse=True)
    assert 0 < len(records) <= len(crop_proposals)


def test_records_bad_arguments(crop_proposals):
    with pytest.raises(ValueError, match="output_mode"):
        proposals_to_records(crop_proposals, output_mode="png")
    with pytest.raises(ValueError, match="min_mask_region_area"):
        proposals_to_records(crop_proposals, min_mask_region_area=-1)
