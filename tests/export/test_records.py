from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask

from grounded_sam.export.files import atomic_write, atomic_write_json
from grounded_sam.export.records import (
    detections_to_json,
    detections_to_records,
    everything_to_detections,
    records_to_detections,
    save_instance_masks,
)
from grounded_sam.utils.masks import encode_rle
from tests.export.conftest import CLASSES, scene_detections

RECORD_KEYS = {"id", "label", "class_id", "confidence", "clip_score", "sam_iou", "box", "area"}


def test_records_schema_and_rle_masks() -> None:
    dets = scene_detections(80, 100, CLASSES)
    dets.data["clip_score"][2] = np.nan  # NaN must become null, not invalid JSON
    records = detections_to_records(dets, (80, 100))
    json.dumps(records, allow_nan=False)
    assert [r["label"] for r in records] == CLASSES
    for i, r in enumerate(records):
        assert set(r) == RECORD_KEYS | {"mask"}
        assert r["id"] == i and r["class_id"] == i
        assert r["box"] == pytest.approx(dets.xyxy[i].tolist())
        assert r["confidence"] == pytest.approx(float(dets.confidence[i]))
        assert r["area"] == int(dets.mask[i].sum())
        assert r["mask"]["size"] == [80, 100] and isinstance(r["mask"]["counts"], str)
        decoded = coco_mask.decode({**r["mask"], "counts": r["mask"]["counts"].encode()})
        np.testing.assert_array_equal(decoded.astype(bool), dets.mask[i])
        assert (
            int(coco_mask.area({**r["mask"], "counts": r["mask"]["counts"].encode()})) == r["area"]
        )
    assert records[2]["clip_score"] is None
    assert records[0]["sam_iou"] == pytest.approx(0.95)


def test_records_round_trip_to_detections() -> None:
    dets = scene_detections(80, 100, CLASSES)
    records = detections_to_records(dets, (80, 100))
    back = records_to_detections(records, (80, 100), classes=["hazelnut", "fig", "date"])
    np.testing.assert_array_equal(back.mask, dets.mask)
    np.testing.assert_allclose(back.xyxy, dets.xyxy)
    np.testing.assert_allclose(back.confidence, dets.confidence)
    assert back.class_id.tolist() == [2, 1, 0]  # remapped to the given class list
    assert back.data["class_name"].tolist() == CLASSES
    empty = records_to_detections([], (80, 100))
    assert len(empty) == 0 and empty.mask.shape == (0, 80, 100)
    with pytest.raises(ValueError, match="not one of the classes"):
        records_to_detections(records, (80, 100), classes=["date"])


def test_json_document() -> None:
    dets = scene_detections(80, 100, CLASSES)
    doc = detections_to_json(
        dets,
        (80, 100),
        image_path=Path("x/photo.jpg"),
        prompt=["date", "fig", "hazelnut"],
        phrases=CLASSES,
        models={"sam": "s", "clip": "c"},
    )
    text = json.dumps(doc, allow_nan=False)
    doc = json.loads(text)
    assert doc["image"] == "x/photo.jpg" and (doc["width"], doc["height"]) == (100, 80)
    assert doc["prompt"] == "date, fig, hazelnut" and doc["phrases"] == CLASSES
    assert doc["num_instances"] == 3 == len(doc["instances"])
    no_masks = detections_to_json(dets, (80, 100), include_masks=False)
    assert all(r["mask"] is None for r in no_masks["instances"])


def test_records_reject_masks_of_another_size() -> None:
    with pytest.raises(ValueError, match="expected"):
        detections_to_records(scene_detections(80, 100, CLASSES), (81, 100))


def test_save_instance_masks(tmp_path: Path) -> None:
    dets = scene_detections(80, 100, ["red car/2", "fig", "x"])
    paths = save_instance_masks(dets, tmp_path / "masks", "photo")
    assert [p.name for p in paths] == [
        "photo_000_red_car_2.png",
        "photo_001_fig.png",
        "photo_002_x.png",
    ]
    for p, m in zip(paths, dets.mask, strict=True):
        arr = np.asarray(Image.open(p))
        assert arr.dtype == np.uint8 and arr.shape == (80, 100)
        assert set(np.unique(arr).tolist()) <= {0, 255}
        np.testing.assert_array_equal(arr == 255, m)
    assert save_instance_masks(dets[np.zeros(3, dtype=bool)], tmp_path, "none") == []
    assert not list((tmp_path / "masks").glob(".*.tmp"))


def test_everything_records_to_detections() -> None:
    masks = scene_detections(80, 100, CLASSES).mask
    records = [
        {
            "segmentation": rle,
            "bbox": [5.0, 5.0, 29.0, 19.0],  # Meta's xywh: inclusive extent
            "area": int(m.sum()),
            "predicted_iou": 0.9,
            "stability_score": 0.97,
        }
        for rle, m in zip(encode_rle(masks), masks, strict=True)
    ]
    dets = everything_to_detections(records, (80, 100))
    np.testing.assert_array_equal(dets.mask, masks)
    assert dets.xyxy[0].tolist() == [5, 5, 35, 25]  # x2/y2 exclusive, like query results
    assert dets.class_id is None and dets.confidence.tolist() == pytest.approx([0.9] * 3)


def test_atomic_write_leaves_old_file_on_failure(tmp_path: Path) -> None:
    target = atomic_write_json(tmp_path / "state.json", {"v": 1})

    def broken(path: Path) -> None:
        path.write_text('{"v": 2, "trunc')
        raise KeyboardInterrupt  # e.g. Ctrl-C in the middle of a write

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, broken)
    assert json.loads(target.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]
