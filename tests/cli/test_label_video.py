"""``grounded-sam label`` on videos, as a user runs it (subprocess, tiny random SAM 2.1 + CLIP)."""

from __future__ import annotations

import configparser
import json
from pathlib import Path

import pytest
from pycocotools.coco import COCO

from grounded_sam.video.synthetic import demo_video
from tests.cli.conftest import error_lines, run_cli, synthetic_image


@pytest.fixture
def clips(tmp_path) -> Path:
    root = tmp_path / "clips"
    demo_video(6).write(root / "street.mp4")
    demo_video(5, size=(96, 128)).write(root / "sub" / "yard.mp4")
    return root


def test_label_videos_to_mot_then_coco_video_without_tracking_again(
    clips, tmp_path, video_model_args
):
    out = tmp_path / "ds"
    cmd = ["label", clips, "-c", "red box, blue disc", "-o", out, "--every", "3",
           "--max-frames", "4", "--no-progress", *video_model_args]  # fmt: skip
    proc = run_cli([*cmd, "--format", "mot"])
    assert proc.returncode == 0, proc.stderr
    assert "2 of 2 video(s) labeled" in proc.stdout and "8 frames" in proc.stdout
    assert (out / "seqmap.txt").read_text() == "name\nstreet\nsub__yard\n"
    ini = configparser.ConfigParser()
    ini.read(out / "street" / "seqinfo.ini")
    assert ini["Sequence"]["seqLength"] == "4" and ini["Sequence"]["imWidth"] == "160"
    lines = (out / "street" / "gt" / "gt.txt").read_text().splitlines()
    for line in lines:
        cols = line.split(",")
        assert len(cols) == 9 and 1 <= int(cols[0]) <= 4 and int(cols[1]) >= 1
        assert cols[6] == "1" and cols[7] in ("1", "2") and cols[8] == "1"
    # the same command in another format: exported from the saved tracks, no model loaded
    proc = run_cli([*cmd, "--format", "coco", "--frames"])
    assert proc.returncode == 0, proc.stderr
    assert "(0 now, 2 from an earlier run)" in proc.stdout
    assert "models ready" not in proc.stderr
    coco = COCO(str(out / "annotations.json"))
    assert all((out / img["file_name"]).is_file() for img in coco.dataset["images"])
    doc = json.loads((out / "annotations.json").read_text())
    assert [v["name"] for v in doc["videos"]] == ["street", "sub__yard"]
    assert len(coco.getImgIds()) == 8 and len(coco.getAnnIds()) == sum(
        len((out / s / "gt" / "gt.txt").read_text().splitlines()) for s in ("street", "sub__yard")
    )


def test_label_video_errors_are_one_line_before_models_load(clips, tmp_path, tiny_model_specs):
    out = tmp_path / "ds"
    no_model = ["--sam", str(tmp_path / "missing"), "--clip", "local-dir:" + str(tmp_path)]
    proc = run_cli(["label", clips, "-c", "car", "-o", out, "-f", "yolo", *no_model])
    assert proc.returncode == 1
    assert error_lines(proc.stderr) == [
        "grounded-sam: error: --format yolo is an image format; a folder of videos is labeled "
        "into coco or mot (COCO-video or MOTChallenge)."
    ]
    images = tmp_path / "images"
    synthetic_image(images / "a.jpg", h=32, w=32, seed=0)
    proc = run_cli(["label", images, "-c", "car", "-o", out, "-f", "mot", *no_model])
    assert proc.returncode == 1 and len(error_lines(proc.stderr)) == 1
    assert "--format mot is a video format" in proc.stderr
    synthetic_image(clips / "sub" / "still.png", h=32, w=32, seed=0)
    proc = run_cli(["label", clips, "-c", "car", "-o", out, *no_model])
    assert proc.returncode == 1 and len(error_lines(proc.stderr)) == 1
    assert "holds both videos (2, e.g. street.mp4) and images (1" in proc.stderr
    # one video file; a SAM that is not SAM 2.1 and no --propagator
    proc = run_cli(["label", clips / "street.mp4", "-c", "car", "-o", out,
                    "--sam", tiny_model_specs[0]])  # fmt: skip
    assert proc.returncode == 1 and len(error_lines(proc.stderr)) == 1
    assert "add --propagator sam2.1_t" in proc.stderr
    assert not out.exists() or sorted(p.name for p in out.iterdir()) == []


def test_help_says_how_trackeval_reads_the_mot_class_column():
    """The class column is --classes' index, which TrackEval's MOT17 preprocessing misreads."""
    from grounded_sam.cli.label_video import DESCRIPTION
    from grounded_sam.labeling.formats import mot
    from grounded_sam.video.reader import VIDEO_EXTENSIONS

    text = " ".join(DESCRIPTION.split())
    assert "class is the 1-based index in --classes" in text
    assert "2, 7, 8, 12 as distractors" in text and "DO_PREPROC=False" in text
    doc = " ".join(mot.__doc__.split())
    assert "``DO_PREPROC=False``" in doc and "cars (2) would be distractors" in doc
    assert all(ext in text.split("(", 1)[1] for ext in VIDEO_EXTENSIONS)
    readme = " ".join((Path(__file__).parents[2] / "README.md").read_text().split())
    assert "# MOT's class column is the 1-based index in --classes" in readme
