"""segment, shell and label with a SAM 3 checkpoint: the commands are unchanged, no CLIP."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.cli.conftest import run_cli, synthetic_image
from tests.sam.sam3_models import tiny_sam3_folder


def _args() -> list[str]:
    """The tiny SAM 3 on the CPU; threshold 0 (random weights score every query near 0.25).

    No --clip: the default CLIP is not in the (offline) cache, and must not be needed.
    """
    return ["--sam", str(tiny_sam3_folder()), "--device", "cpu", "--threshold", "0"]


def test_segment_on_the_command_line(tmp_path: Path) -> None:
    image = synthetic_image(tmp_path / "shapes.png")
    out = tmp_path / "out"
    proc = run_cli(["segment", image, "-p", "date, fig", "--top-k", "2", "--out", out, "--json",
                    *_args()])  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout.splitlines()[0])
    assert doc["phrases"] == ["date", "fig"]
    assert 1 <= len(doc["instances"]) <= 4
    assert {r["label"] for r in doc["instances"]} <= {"date", "fig"}
    assert all(r["clip_score"] is None for r in doc["instances"])  # no CLIP was run
    assert np.asarray(Image.open(out / "shapes_overlay.png")).shape == (96, 128, 3)
    assert len(list((out / "shapes_masks").glob("*.png"))) == len(doc["instances"])
    assert "Traceback" not in proc.stderr


def test_shell_in_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from grounded_sam.cli.main import main

    image = synthetic_image(tmp_path / "shapes.png")
    monkeypatch.setattr("sys.stdin", io.StringIO("fig\ndate, fig\n"))
    assert main(["shell", str(image), "--out", str(tmp_path), *_args()]) == 0
    captured = capsys.readouterr()
    assert captured.out.count(" ms; overlay: ") == 2


def test_label_to_coco_in_process(tmp_path: Path, capsys) -> None:
    from pycocotools.coco import COCO

    from grounded_sam.cli.main import main

    for i in range(2):
        synthetic_image(tmp_path / "images" / f"img{i}.png", h=64, w=80, seed=i)
    out = tmp_path / "dataset"
    args = ["label", str(tmp_path / "images"), "--classes", "date, fig", "--format", "coco",
            "--out", str(out), "--top-k", "1", *_args()]  # fmt: skip
    assert main(args) == 0
    assert "2 of 2 image(s) labeled" in capsys.readouterr().out
    coco = COCO(str(out / "annotations.json"))
    assert [c["name"] for c in coco.dataset["categories"]] == ["date", "fig"]
    assert 1 <= len(coco.dataset["annotations"]) <= 4
    # resume: a second run reuses both images' labels
    assert main(args) == 0
    assert "(0 now, 2 from an earlier run)" in capsys.readouterr().out


def test_everything_refuses_sam3_in_one_line(tmp_path: Path, capsys) -> None:
    from grounded_sam.cli.main import main
    from grounded_sam.grounding.sam3_grounder import NO_EVERYTHING

    image = synthetic_image(tmp_path / "shapes.png")
    out = tmp_path / "out"
    assert main(["everything", str(image), "--out", str(out), *_args()[:-2]]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"grounded-sam: error: {NO_EVERYTHING}"
    assert not out.exists() or not any(out.iterdir())  # nothing written
