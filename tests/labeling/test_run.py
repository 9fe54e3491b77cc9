"""Labeling runs: resumed to the same dataset, relabeled when a source changes, per-image state."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pycocotools.coco import COCO

from grounded_sam.export.records import records_to_detections
from grounded_sam.labeling import (
    STATE_DIRNAME,
    export_dataset,
    label_folder,
    label_images,
    prepare_labeling,
)
from grounded_sam.utils.masks import decode_rle
from tests.labeling.conftest import CLASSES, FakeEngine, config, run


def test_resume_skips_done_images_and_gives_the_same_dataset(
    image_folder: Path, tmp_path: Path
) -> None:
    full = tmp_path / "full"
    run(FakeEngine(), image_folder, full)

    out = tmp_path / "resumed"
    engine = FakeEngine()
    images = prepare_labeling(image_folder, out)
    first_two = [p for p in images if p.name in ("a.jpg", "b.PNG")]
    run_partial = label_images(
        engine, image_folder, first_two, CLASSES, out, config=config(), progress=False
    )
    assert run_partial.labeled == 2
    (out / "annotations.json").unlink()  # as if killed before the export
    engine = FakeEngine()
    report, _ = run(engine, image_folder, out)
    assert (report.reused, report.labeled, engine.indexed) == (2, 2, 2)

    def strip(doc: dict) -> dict:
        for img in doc["images"]:
            img.pop("date_captured")
        return doc

    a = strip(json.loads((full / "annotations.json").read_text()))
    b = strip(json.loads((out / "annotations.json").read_text()))
    assert a == b

    # Nothing left to do: the engine loader is never called; re-export in another format.
    def no_models() -> None:
        raise AssertionError("models loaded although every image was done")

    (image_folder / "sub" / "broken.jpg").unlink()
    report, failures = run(no_models, image_folder, out, "yolo")
    assert (report.reused, report.labeled, failures) == (4, 0, [])
    assert len(list((out / "labels").glob("*.txt"))) == 4
    assert export_dataset(out, "voc") == [out / "annotations"]
    assert len(list((out / "annotations").glob("*.xml"))) == 4


def test_changed_image_is_labeled_again(image_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    run(FakeEngine(), image_folder, out)
    (image_folder / "a.jpg").write_bytes((image_folder / "sub" / "a.png").read_bytes())
    engine = FakeEngine()
    report, _ = run(engine, image_folder, out)
    assert (report.reused, report.labeled) == (3, 1)


def test_other_settings_refuse_to_resume_unless_restart(image_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    run(FakeEngine(), image_folder, out)
    with pytest.raises(ValueError, match="threshold differ.*--restart"):
        run(FakeEngine(), image_folder, out, config=config(threshold=0.5))
    engine = FakeEngine()
    report, _ = run(engine, image_folder, out, config=config(threshold=0.5), restart=True)
    assert (report.reused, report.labeled) == (0, 4)


def test_failed_export_files_are_pruned_and_state_is_per_image(
    image_folder: Path, tmp_path: Path
) -> None:
    out = tmp_path / "ds"
    run(FakeEngine(), image_folder, out, "yolo")
    (image_folder / "b.PNG").write_bytes(b"now corrupt")
    report, failures = run(FakeEngine(), image_folder, out, "yolo")
    assert sorted(r for r, _ in failures) == ["b.PNG", "sub/broken.jpg"]
    assert sorted(p.name for p in (out / "images").iterdir()) == [
        "a.jpg",
        "sub__a.png",
        "sub__c.webp",
    ]
    assert sorted(p.name for p in (out / "labels").iterdir()) == [
        "a.txt",
        "sub__a.txt",
        "sub__c.txt",
    ]
    state = out / STATE_DIRNAME / "images" / "sub" / "a.png.json"
    saved = json.loads(state.read_text())
    dets = records_to_detections(saved["instances"], (saved["height"], saved["width"]), CLASSES)
    assert len(dets) == 3 and decode_rle(saved["instances"][1]["mask"]).shape == (64, 64)
    assert not list(out.rglob("*.tmp")) and not list(out.rglob("export-*"))


def test_label_folder_with_the_real_engine(tiny_gs, image_folder: Path, tmp_path: Path) -> None:
    report = label_folder(
        tiny_gs, image_folder, "date, fig", tmp_path / "ds", "coco", progress=False, top_k=2
    )
    assert (report.labeled, len(report.failed)) == (4, 1)
    coco = COCO(str(tmp_path / "ds" / "annotations.json"))
    assert [c["name"] for c in coco.dataset["categories"]] == ["date", "fig"]
    run_cfg = json.loads((tmp_path / "ds" / STATE_DIRNAME / "run.json").read_text())["config"]
    assert run_cfg["sam"] == tiny_gs.model_ids[0] and run_cfg["top_k"] == 2
    for ann in coco.dataset["annotations"]:
        assert 0.0 <= ann["score"] <= 1.0
        assert coco.annToMask(ann).sum() == ann["area"] > 0
