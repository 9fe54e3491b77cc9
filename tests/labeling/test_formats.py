"""COCO, YOLO and VOC datasets load in pycocotools and supervision with the exact masks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import supervision as sv
from pycocotools.coco import COCO

from tests.labeling.conftest import CLASSES, FakeEngine, run, scene_detections

FLAT = ["a.jpg", "b.PNG", "sub__a.png", "sub__c.webp"]


def test_coco_export_loads_with_pycocotools_and_supervision(
    image_folder: Path, tmp_path: Path
) -> None:
    engine = FakeEngine()
    out = tmp_path / "ds"
    report, failures = run(engine, image_folder, out, "coco")
    # The corrupt file is reported by name with a reason, counted, and skipped.
    assert [rel for rel, _ in failures] == ["sub/broken.jpg"] == [r for r, _ in report.failed]
    assert "not an image file" in failures[0][1]
    assert (report.total, report.labeled, report.reused) == (5, 4, 0)
    assert engine.indexed == 4 and all(q == CLASSES for q in engine.queries)  # one index each
    assert report.instances == {"date": 4, "fig": 4, "hazelnut": 4}
    assert sorted(p.name for p in (out / "images").iterdir()) == FLAT

    coco = COCO(str(out / "annotations.json"))
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == CLASSES
    assert sorted(img["file_name"] for img in coco.dataset["images"]) == FLAT
    anns = coco.dataset["annotations"]
    assert len(anns) == 12
    assert all(a["iscrowd"] == 0 and isinstance(a["segmentation"]["counts"], str) for a in anns)
    assert sorted({a["score"] for a in anns}) == pytest.approx([0.6, 0.75, 0.9])
    for ann in anns:  # the exported RLE is the exact mask
        img = coco.imgs[ann["image_id"]]
        expected = scene_detections(img["height"], img["width"], CLASSES).mask[
            CLASSES.index(coco.cats[ann["category_id"]]["name"])
        ]
        np.testing.assert_array_equal(coco.annToMask(ann).astype(bool), expected)
        assert ann["area"] == int(expected.sum())
    results = coco.loadRes(
        [{k: a[k] for k in ("image_id", "category_id", "segmentation", "score")} for a in anns]
    )
    assert len(results.getAnnIds()) == 12

    ds = sv.DetectionDataset.from_coco(
        images_directory_path=str(out / "images"),
        annotations_path=str(out / "annotations.json"),
        force_masks=True,
    )
    assert ds.classes == CLASSES and len(ds) == 4
    for _, _, dets in ds:
        h, w = dets.mask.shape[1:]
        expected = scene_detections(h, w, CLASSES)
        np.testing.assert_array_equal(dets.mask, expected.mask)
        assert dets.class_id.tolist() == [0, 1, 2]
        np.testing.assert_allclose(dets.xyxy, expected.xyxy)


def test_yolo_export_round_trip_with_score_sidecar(image_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    run(FakeEngine(), image_folder, out, "yolo")
    ds = sv.DetectionDataset.from_yolo(
        images_directory_path=str(out / "images"),
        annotations_directory_path=str(out / "labels"),
        data_yaml_path=str(out / "data.yaml"),
    )
    assert ds.classes == CLASSES and len(ds) == 4
    for path, _, dets in ds:
        h, w = dets.mask.shape[1:]
        expected = scene_detections(h, w, CLASSES)
        # The two-part mask is one polygon line: one detection, one instance.
        assert dets.class_id.tolist() == [0, 1, 2]
        iou = (dets.mask[2] & expected.mask[2]).sum() / (dets.mask[2] | expected.mask[2]).sum()
        assert iou > 0.8
        stem = Path(path).stem
        labels = (out / "labels" / f"{stem}.txt").read_text().splitlines()
        scores = (out / "scores" / f"{stem}.txt").read_text().splitlines()
        assert len(scores) == len(labels) == 3
        assert [float(s) for s in scores] == pytest.approx([0.9, 0.75, 0.6])


def test_voc_export_round_trip(image_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    run(FakeEngine(), image_folder, out, "voc")
    ds = sv.DetectionDataset.from_pascal_voc(
        images_directory_path=str(out / "images"),
        annotations_directory_path=str(out / "annotations"),
    )
    assert set(ds.classes) == set(CLASSES) and len(ds) == 4
    for _, _, dets in ds:
        names = [ds.classes[i] for i in dets.class_id]
        assert sorted(names) == ["date", "fig", "hazelnut"]  # one object per detection


def test_newline_in_a_file_name_never_reaches_coco(tmp_path: Path) -> None:
    from PIL import Image

    folder = tmp_path / "imgs"
    (folder / "sub").mkdir(parents=True)
    for rel in ["sub/a.png", "sub__a.png", "line\nbreak.png"]:
        Image.new("RGB", (64, 48), (120, 90, 30)).save(folder / rel)
    out = tmp_path / "ds"
    report, failures = run(FakeEngine(), folder, out)
    assert report.labeled == 3 and not failures
    doc = json.loads((out / "annotations.json").read_text())
    names = sorted(im["file_name"] for im in doc["images"])
    assert names == ["line_break.png", "sub__a.png", "sub__a_1.png"]
    assert sorted(p.name for p in (out / "images").iterdir()) == names
