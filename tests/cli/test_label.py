"""``grounded-sam label`` through the real entry point: failures, exports, interruption."""

from __future__ import annotations

import filecmp
import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import supervision as sv
from PIL import Image
from pycocotools.coco import COCO

from grounded_sam.labeling import STATE_DIRNAME
from tests.cli.conftest import PACED_ENTRY, error_lines, popen_cli, run_cli, synthetic_image

CLASSES = "date, fig, hazelnut"
GOOD = 6


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 readable images (nested, upper-case extension) and one corrupt file."""
    root = tmp_path_factory.mktemp("label") / "images"
    for i in range(4):
        synthetic_image(root / f"img{i}.jpg", h=64 + 8 * i, w=80, seed=i)
    synthetic_image(root / "sub" / "deep" / "nested.PNG", h=72, w=72, seed=7)
    synthetic_image(root / "sub" / "other.bmp", h=64, w=96, seed=8)
    (root / "sub" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated garbage")
    return root


@pytest.fixture(scope="module")
def uninterrupted(
    folder: Path, model_args: list[str], tmp_path_factory: pytest.TempPathFactory
) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path_factory.mktemp("uninterrupted") / "dataset"
    proc = run_cli(["label", folder, "--classes", CLASSES, "--format", "coco", "--out", out,
                    *model_args])  # fmt: skip
    return proc, out


def comparable(coco_file: Path) -> dict:
    doc = json.loads(coco_file.read_text())
    for image in doc["images"]:
        image.pop("date_captured")
    return {k: doc[k] for k in ("images", "annotations", "categories", "info")}


def state_files(out: Path) -> int:
    return len(list((out / STATE_DIRNAME / "images").rglob("*.json")))


def test_corrupt_image_is_reported_skipped_counted_and_exit_is_nonzero(uninterrupted) -> None:
    proc, out = uninterrupted
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    failed = [line for line in error_lines(proc.stderr) if line.startswith("grounded-sam: failed")]
    assert len(failed) == 1
    assert failed[0].startswith("grounded-sam: failed: sub/broken.jpg: ")
    assert "could not be decoded" in failed[0] or "not an image" in failed[0]
    assert error_lines(proc.stderr)[-1] == (
        "grounded-sam: error: 1 image(s) failed and were left out: sub/broken.jpg"
    )
    assert f"{GOOD} of {GOOD + 1} image(s) labeled" in proc.stdout and "1 failed" in proc.stdout
    assert "Labeling: 100%" in proc.stderr and f"{GOOD + 1}/{GOOD + 1}" in proc.stderr


def test_coco_export_loads_with_pycocotools_and_supervision(uninterrupted) -> None:
    _, out = uninterrupted
    coco = COCO(str(out / "annotations.json"))
    assert [c["name"] for c in coco.dataset["categories"]] == ["date", "fig", "hazelnut"]
    names = sorted(img["file_name"] for img in coco.dataset["images"])
    assert names == sorted(
        ["img0.jpg", "img1.jpg", "img2.jpg", "img3.jpg", "sub__deep__nested.PNG",
         "sub__other.bmp"]
    )  # fmt: skip
    anns = coco.dataset["annotations"]
    assert anns, "tiny models with --threshold 0 should label something"
    for ann in anns:
        assert 0.0 <= ann["score"] <= 1.0 and ann["iscrowd"] == 0
        assert coco.annToMask(ann).sum() == ann["area"] > 0
    results = coco.loadRes(
        [{k: a[k] for k in ("image_id", "category_id", "segmentation", "score")} for a in anns]
    )
    assert len(results.getAnnIds()) == len(anns)

    ds = sv.DetectionDataset.from_coco(
        images_directory_path=str(out / "images"),
        annotations_path=str(out / "annotations.json"),
        force_masks=True,
    )
    assert len(ds) == GOOD and ds.classes == ["date", "fig", "hazelnut"]
    total = 0
    for path, image, dets in ds:
        assert image.shape[:2] == dets.mask.shape[1:]
        assert Image.open(path).size == (image.shape[1], image.shape[0])
        total += len(dets)
    assert total == len(anns)


def test_reexport_as_yolo_round_trips(
    uninterrupted, folder: Path, model_args: list[str], tmp_path: Path
) -> None:
    _, labeled = uninterrupted
    out = tmp_path / "dataset"
    shutil.copytree(labeled, out)
    broken = folder / "sub" / "broken.jpg"
    proc = run_cli(["label", folder, "-c", CLASSES, "-f", "yolo", "-o", out, *model_args])
    assert proc.returncode == 1 and broken.exists()  # still broken, still reported
    assert f"(0 now, {GOOD} from an earlier run)" in proc.stdout  # nothing labeled again
    ds = sv.DetectionDataset.from_yolo(
        images_directory_path=str(out / "images"),
        annotations_directory_path=str(out / "labels"),
        data_yaml_path=str(out / "data.yaml"),
    )
    assert ds.classes == ["date", "fig", "hazelnut"] and len(ds) == GOOD
    coco = json.loads((out / "annotations.json").read_text())
    for path, _, dets in ds:
        stem = Path(path).stem
        scores = (out / "scores" / f"{stem}.txt").read_text().split()
        labels = (out / "labels" / f"{stem}.txt").read_text().splitlines()
        assert len(scores) == len(labels) == len(dets)
        image_id = next(i["id"] for i in coco["images"] if Path(i["file_name"]).stem == stem)
        coco_scores = {round(a["score"], 6) for a in coco["annotations"]
                       if a["image_id"] == image_id}  # fmt: skip
        assert {round(float(s), 6) for s in scores} == coco_scores


def test_interrupted_and_killed_runs_resume_to_the_same_dataset(
    uninterrupted, folder: Path, model_args: list[str], tmp_path: Path
) -> None:
    _, reference = uninterrupted
    out = tmp_path / "dataset"
    args = ["label", folder, "--classes", CLASSES, "--out", out, *model_args]

    def run_until(n_states: int, sig: int, log: str) -> tuple[int, str]:
        proc = popen_cli(args, tmp_path / log, entry=PACED_ENTRY)  # a pause per image
        deadline = time.monotonic() + 300
        while state_files(out) < n_states and proc.poll() is None:
            assert time.monotonic() < deadline, "no progress"
            time.sleep(0.02)
        if proc.poll() is None:
            proc.send_signal(sig)
        returncode = proc.wait(timeout=120)
        return returncode, (tmp_path / log).with_suffix(".err").read_text()

    # Ctrl-C after the first image: a clean exit 130 with one message, no traceback.
    returncode, stderr = run_until(1, signal.SIGINT, "first")
    done = state_files(out)
    assert 1 <= done < GOOD, "the run should have been interrupted part-way"
    assert returncode == 130
    assert "Traceback" not in stderr and error_lines(stderr)[-1] == "grounded-sam: interrupted"
    assert not (out / "annotations.json").exists()

    # Killed outright (no cleanup at all) after one more image.
    returncode, _ = run_until(done + 1, signal.SIGKILL, "second")
    assert returncode in (-signal.SIGKILL, 1)  # 1: it finished before the kill
    assert not list(out.rglob("*.tmp"))

    final = run_cli(args)
    assert final.returncode == 1  # the corrupt file is still reported
    assert f"{GOOD} of {GOOD + 1} image(s) labeled" in final.stdout
    assert comparable(out / "annotations.json") == comparable(reference / "annotations.json")
    for image in (reference / "images").iterdir():
        assert filecmp.cmp(image, out / "images" / image.name, shallow=False)
