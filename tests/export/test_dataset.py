from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import supervision as sv
from pycocotools.coco import COCO

from grounded_sam import EverythingSettings
from grounded_sam.export.dataset import (
    STATE_DIRNAME,
    export_dataset,
    find_images,
    label_folder,
    label_images,
    labeling_config,
    prepare_labeling,
)
from grounded_sam.export.records import records_to_detections
from grounded_sam.utils.masks import decode_rle
from tests.export.conftest import CLASSES, FakeEngine, scene_detections

GOOD = ["a.jpg", "b.PNG", "sub/a.png", "sub/c.webp"]
FLAT = ["a.jpg", "b.PNG", "sub__a.png", "sub__c.webp"]


def config(**overrides: object) -> dict:
    kwargs = {"sam": "fake-sam", "clip": "fake-clip", "proposal_settings": EverythingSettings()}
    kwargs.update(overrides)
    return labeling_config(CLASSES, **kwargs)


def run(engine: object, folder: Path, out: Path, fmt: str = "coco", **kwargs: object):
    images = prepare_labeling(folder, out)
    failures: list[tuple[str, str]] = []
    report = label_images(
        engine,
        folder,
        images,
        CLASSES,
        out,
        fmt,
        config=kwargs.pop("config", config()),
        progress=False,
        on_failure=lambda rel, why: failures.append((rel, why)),
        **kwargs,
    )
    return report, failures


def test_find_images_recursive_any_case_sorted(image_folder: Path, tmp_path: Path) -> None:
    (image_folder / ".hidden").mkdir()
    (image_folder / ".hidden" / "x.jpg").write_bytes(b"")
    (image_folder / "out").mkdir()
    (image_folder / "out" / "y.jpg").write_bytes(b"")
    found = find_images(image_folder, exclude=[image_folder / "out"])
    rels = [p.relative_to(image_folder).as_posix() for p in found]
    assert rels == ["a.jpg", "b.PNG", "sub/a.png", "sub/broken.jpg", "sub/c.webp"]


def test_prepare_labeling_rejects_bad_folders(image_folder: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        prepare_labeling(tmp_path / "missing", tmp_path / "out")
    with pytest.raises(ValueError, match="not a folder"):
        prepare_labeling(image_folder / "a.jpg", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="No images found"):
        prepare_labeling(tmp_path / "empty", tmp_path / "out")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        prepare_labeling(image_folder, tmp_path / "file.txt")
    with pytest.raises(ValueError, match="contains the images folder"):
        prepare_labeling(image_folder, image_folder.parent)
    # An output folder inside the images folder is fine and is not scanned.
    assert len(prepare_labeling(image_folder, image_folder / "dataset")) == 5


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


def test_grounding_options_reach_the_engine_and_the_run_config(
    image_folder: Path, tmp_path: Path
) -> None:
    plain = config()
    assert not {"negative", "calibration", "keep_parts"} & set(plain)  # old runs still resume
    cfg = config(negative="stem, leaf", calibration="per_phrase", keep_parts=True)
    assert (cfg["negative"], cfg["calibration"], cfg["keep_parts"]) == (
        ["stem", "leaf"], "per_phrase", True,
    )  # fmt: skip
    with pytest.raises(ValueError, match="both a phrase and a negative"):
        config(negative=CLASSES[0])
    with pytest.raises(ValueError, match="calibration must be one of"):
        config(calibration="joint-ish")  # label --ray builds its config here: fails up front

    seen: list[dict] = []

    class Spy(FakeEngine):
        def query(self, index, prompt, **kwargs):
            seen.append(kwargs)
            return super().query(index, prompt, **kwargs)

    def no_models() -> None:
        raise AssertionError("models loaded for a run with bad options")

    for bad, match in (({"calibration": "joint-ish"}, "calibration"),
                       ({"negative": CLASSES[0]}, "both a phrase")):  # fmt: skip
        with pytest.raises(ValueError, match=match):
            run(no_models, image_folder, tmp_path / "bad", config=cfg, **bad)
        assert not any((tmp_path / "bad").rglob("*"))  # nothing written either

    out = tmp_path / "ds"
    report, _ = run(Spy(), image_folder, out, config=cfg, negative="stem, leaf",
                    calibration="per_phrase", keep_parts=True)  # fmt: skip
    assert report.labeled == 4 and len(seen) == 4
    assert all(k["negative"] == "stem, leaf" and k["calibration"] == "per_phrase" for k in seen)
    assert all(k["keep_parts"] is True for k in seen)


def test_flat_names_are_unambiguous() -> None:
    from grounded_sam.export.files import flat_names as _flat_names

    rels = sorted(["sub/a.jpg", "sub__a.jpg", "a\nb.jpg", "x/b__c.jpg", "x__b/c.jpg", "A.png"])
    rels += ["\udcff.jpg", "a.jpg"]
    names = _flat_names(rels)
    by_rel = dict(zip(rels, names, strict=True))
    assert by_rel["sub__a.jpg"] == "sub__a.jpg"  # a top-level file keeps its name...
    assert by_rel["sub/a.jpg"] == "sub__a_1.jpg"  # ...whatever sorts before it
    assert by_rel["A.png"] == "A.png" and by_rel["a.jpg"] == "a_1.jpg"  # stems unique (YOLO)
    assert by_rel["a\nb.jpg"] == "a_b.jpg" and by_rel["\udcff.jpg"] == "_.jpg"
    assert by_rel["x/b__c.jpg"] != by_rel["x__b/c.jpg"]
    stems = [Path(n).stem.lower() for n in names]
    assert len(set(stems)) == len(stems)
    assert all(n.isprintable() and n.encode("utf-8") for n in names)


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
