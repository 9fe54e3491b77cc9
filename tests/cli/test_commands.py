"""segment, everything and shell through the real entry point (subprocesses)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from grounded_sam.utils.masks import decode_rle
from tests.cli.conftest import error_lines, run_cli, synthetic_image

PROMPT = "date, fig, hazelnut"


def check_segment_outputs(out: Path, stem: str, image_path: Path) -> dict:
    """Overlay, JSON and per-instance masks agree with each other and with the image."""
    image = np.asarray(Image.open(image_path).convert("RGB"))
    overlay = np.asarray(Image.open(out / f"{stem}_overlay.png"))
    assert overlay.shape == image.shape and overlay.dtype == np.uint8
    doc = json.loads((out / f"{stem}.json").read_text())
    assert doc["image"] == str(image_path) and (doc["height"], doc["width"]) == image.shape[:2]
    assert doc["phrases"] == ["date", "fig", "hazelnut"] and doc["prompt"] == PROMPT
    assert doc["num_instances"] == len(doc["instances"]) > 0
    assert not np.array_equal(overlay, image)
    masks = sorted((out / f"{stem}_masks").glob("*.png"))
    assert len(masks) == doc["num_instances"]
    for rec, mask_file in zip(doc["instances"], masks, strict=True):
        assert rec["label"] in doc["phrases"] and mask_file.name.endswith(f"_{rec['label']}.png")
        assert 0.0 <= rec["confidence"] <= 1.0 and rec["sam_iou"] is not None
        x1, y1, x2, y2 = rec["box"]
        assert 0 <= x1 < x2 <= doc["width"] and 0 <= y1 < y2 <= doc["height"]
        mask = decode_rle(rec["mask"])
        assert mask.sum() == rec["area"] > 0
        np.testing.assert_array_equal(np.asarray(Image.open(mask_file)) == 255, mask)
    return doc


def test_segment_real_photo_and_synthetic_image(
    real_photo: Path, model_args: list[str], tmp_path: Path
) -> None:
    synthetic = synthetic_image(tmp_path / "in" / "shapes.png")
    out = tmp_path / "out"
    proc = run_cli(["segment", real_photo, synthetic, "--prompt", PROMPT, "--out", out,
                    *model_args])  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    for path in (real_photo, synthetic):
        doc = check_segment_outputs(out, path.stem, path)
        assert f"{path}: {doc['num_instances']} instance(s)" in proc.stdout
    assert "label" in proc.stdout and "conf" in proc.stdout and "area" in proc.stdout


def test_segment_json_to_stdout(model_args: list[str], tmp_path: Path) -> None:
    image = synthetic_image(tmp_path / "shapes.jpg")
    out = tmp_path / "out"
    proc = run_cli(["segment", image, "-p", PROMPT, "--json", "-o", out, "--top-k", "1",
                    *model_args])  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 1  # nothing but the JSON document on stdout
    doc = json.loads(lines[0])
    assert doc == json.loads((out / "shapes.json").read_text())  # same JSON as the file
    assert 0 < doc["num_instances"] <= 3  # --top-k 1: at most one per phrase
    check_segment_outputs(out, "shapes", image)


def test_everything(model_args: list[str], tmp_path: Path) -> None:
    image = synthetic_image(tmp_path / "shapes.png")
    out = tmp_path / "out"
    assert model_args[-2] == "--threshold"
    args = model_args[:-2]  # everything has no --threshold
    proc = run_cli(["everything", image, "--out", out, "--min-mask-region-area", "4", *args])
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((out / "shapes_everything.json").read_text())
    assert doc["num_masks"] == len(doc["masks"]) > 0
    assert doc["settings"]["points_per_side"] == 4
    for rec in doc["masks"]:
        mask = decode_rle(rec["segmentation"])
        assert mask.shape == (96, 128) and mask.sum() == rec["area"]
        assert set(rec) >= {"bbox", "predicted_iou", "stability_score", "point_coords",
                            "crop_box"}  # fmt: skip
    overlay = np.asarray(Image.open(out / "shapes_everything.png"))
    assert overlay.shape == (96, 128, 3)
    assert f"{doc['num_masks']} mask(s)" in proc.stdout
    # Progress bars and the one-line timing summary go to stderr (tests/cli/test_progress.py).
    parts = [p for line in proc.stderr.splitlines() for p in line.split("\r") if p.strip()]
    assert any(p.startswith("SAM encoder:") for p in parts), proc.stderr
    assert any(p.startswith("proposals:") and "100%" in p for p in parts), proc.stderr
    assert any(p.startswith(f"grounded-sam: {image}: SAM encoder ") for p in parts)


def test_everything_json_is_the_documented_records_conversion(
    model_args: list[str], tiny_gs, tmp_path: Path, capsys
) -> None:
    """``masks`` of the JSON are ``everything_records(gs.everything(...), "coco_rle")``: the
    conversion users get from the Python API (in-process, so both sides compute the same)."""
    from grounded_sam import load_image
    from grounded_sam.cli.main import main
    from grounded_sam.export.records import everything_records, jsonable

    image = synthetic_image(tmp_path / "shapes.png")
    out = tmp_path / "out"
    args = ["everything", str(image), "--out", str(out), "--min-mask-region-area", "4"]
    assert main([*args, *model_args[:-2]]) == 0
    capsys.readouterr()
    doc = json.loads((out / "shapes_everything.json").read_text())
    dets = tiny_gs.everything(load_image(image), **doc["settings"])
    assert len(dets) == doc["num_masks"] > 0
    assert doc["masks"] == json.loads(json.dumps(jsonable(everything_records(dets, "coco_rle"))))


def test_shell_reads_phrases_from_stdin(model_args: list[str], tmp_path: Path) -> None:
    image = synthetic_image(tmp_path / "shapes.png")
    out = tmp_path / "out"
    phrases = "hazelnut\n , ,\nfig, date\nquit\nnever read\n"
    proc = run_cli(["shell", image, "--out", out, "-q", *model_args], stdin=phrases)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("phrase> ") == 4  # hazelnut, the bad one, fig+date, quit
    answers = [line for line in proc.stdout.splitlines() if " ms; overlay: " in line]
    assert len(answers) == 2  # one per valid phrase line, each with its time
    assert proc.stdout.count("box (x1, y1, x2, y2)") == 2
    assert "indexed 128x96" in proc.stdout
    # The blank-prompt line is an error for that line only: one line, the shell goes on.
    errors = error_lines(proc.stderr)
    assert len(errors) == 1 and errors[0].startswith("grounded-sam: error: The prompt is empty")
    assert np.asarray(Image.open(out / "shapes_overlay.png")).shape == (96, 128, 3)


def test_shell_ends_at_end_of_input_in_process(
    model_args: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    # Same main() as the console script, run in-process to save a subprocess start.
    from grounded_sam.cli.main import main

    image = synthetic_image(tmp_path / "shapes.png")
    monkeypatch.setattr("sys.stdin", io.StringIO("fig"))  # last line without a newline
    assert main(["shell", str(image), "--out", str(tmp_path), *model_args]) == 0
    captured = capsys.readouterr()
    assert captured.out.count(" ms; overlay: ") == 1 and captured.out.count("phrase> ") == 2


def test_segment_negative_exemplar_and_calibration_options(
    model_args: list[str], tmp_path: Path
) -> None:
    image = synthetic_image(tmp_path / "shapes.png")
    proc = run_cli(["segment", image, "-p", "date", "--negative", "fig, hazelnut",
                    "--calibration", "per_phrase", "--keep-parts", "--exemplar", "10,10,60,60",
                    "--exemplar-label", "like this", "--json", *model_args])  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout.splitlines()[0])
    assert doc["phrases"] == ["date", "like this"]
    assert {r["label"] for r in doc["instances"]} <= {"date", "like this"}
