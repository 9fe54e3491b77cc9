"""``grounded-sam track`` as a user runs it (subprocess, tiny random SAM 2.1 + CLIP)."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from grounded_sam.video.synthetic import demo_video
from tests.cli.conftest import error_lines, run_cli


def test_track_writes_json_mot_and_mp4(tmp_path, video_model_args):
    import cv2

    clip = demo_video(10).write(tmp_path / "clip.mp4")
    out = tmp_path / "out"
    proc = run_cli(["track", clip, "--prompt", "red box, blue disc", "--every", "3",
                    "--max-frames", "7", "--out", out, *video_model_args])  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "clip.json", "clip.mot.txt", "clip_tracked.mp4"
    ]  # fmt: skip
    doc = json.loads((out / "clip.json").read_text())
    assert doc["num_frames"] == 7 and [f["frame"] for f in doc["frames"]] == list(range(7))
    assert doc["settings"]["every"] == 3 and doc["phrases"] == ["red box", "blue disc"]
    assert doc["stats"]["key_frames"] == 3 and doc["models"]["propagator"] == video_model_args[1]
    n = sum(f["num_instances"] for f in doc["frames"])
    assert len((out / "clip.mot.txt").read_text().splitlines()) == n
    cap = cv2.VideoCapture(str(out / "clip_tracked.mp4"))
    frames = 0
    while cap.read()[0]:
        frames += 1
    assert frames == 7
    assert "7 frames" in proc.stdout and "wrote" in proc.stdout


def test_track_errors_are_one_line_and_write_nothing(tmp_path, video_model_args):
    out = tmp_path / "out"
    # frames that change size: found mid-run, after the models loaded
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(4):
        size = (48, 64) if i < 3 else (50, 64)
        Image.fromarray(np.full((*size, 3), 100, np.uint8)).save(folder / f"f{i}.png")
    proc = run_cli(["track", folder, "--prompt", "thing", "--every", "2", "--out", out, "-q",
                    *video_model_args])  # fmt: skip
    assert proc.returncode == 1
    assert error_lines(proc.stderr) == [
        f"grounded-sam: error: {folder}: frame 3 is 64x50 but frame 0 is 64x48; every frame of "
        "a video must have the same size (resize the frames first, e.g. ffmpeg -vf "
        "scale=64:48)."
    ]
    assert not out.exists() or list(out.iterdir()) == []  # no final and no temporary file
    # an unreadable video: before any model loads
    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video")
    proc = run_cli(["track", bad, "--prompt", "x", "--out", out, "-q", *video_model_args])
    assert proc.returncode == 1 and "not a video that OpenCV or PyAV can read" in proc.stderr
    assert len(error_lines(proc.stderr)) == 1
    # absurd --every / --max-frames: usage errors
    for flag in (["--every", "0"], ["--every", "-5"], ["--max-frames", "0"], ["--every", "x"]):
        proc = run_cli(["track", bad, "--prompt", "x", "--out", out, *flag])
        assert proc.returncode == 2 and flag[0] in proc.stderr, proc.stderr
    assert not out.exists() or list(out.iterdir()) == []


def test_rerun_skips_with_skip_existing_else_replaces(tmp_path, capsys):
    from grounded_sam.cli.main import main

    clip = demo_video(3).write(tmp_path / "clip.mp4")
    out = tmp_path / "out"
    out.mkdir()
    for name in ("clip.json", "clip.mot.txt"):
        (out / name).write_text("earlier run")
    # every file there: skipped before any model loads (the --sam given does not exist)
    missing = ["--sam", str(tmp_path / "no-model"), "--clip", f"local-dir:{tmp_path}/none"]
    argv = ["track", str(clip), "-p", "red box", "-o", str(out), "--no-video", *missing]
    assert main([*argv, "--skip-existing"]) == 0
    captured = capsys.readouterr()
    assert "already tracked into" in captured.err
    assert "skipped" in captured.out
    assert (out / "clip.json").read_text() == "earlier run"
    # without the flag the run goes on (here to the missing model) and says it will replace
    # the files; they are kept as they were when it fails
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "will replace clip.json, clip.mot.txt" in err and "no-model" in err
    assert sorted(p.name for p in out.iterdir()) == ["clip.json", "clip.mot.txt"]
    assert (out / "clip.mot.txt").read_text() == "earlier run"
    # the mp4 is an output too: with it missing, --skip-existing tracks (and fails the same way)
    assert main(argv[:-5] + missing + ["--skip-existing"]) == 1


def test_track_with_sam3_and_its_own_tracker(tmp_path, sam3_video_dir):
    clip = demo_video(6).write(tmp_path / "clip.mp4")
    out = tmp_path / "out"
    proc = run_cli(["track", clip, "--prompt", "red box", "--every", "3", "--out", out,
                    "--sam", sam3_video_dir, "--device", "cpu", "--dtype", "float32",
                    "--threshold", "0", "--no-video"])  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["clip.json", "clip.mot.txt"]
    doc = json.loads((out / "clip.json").read_text())
    assert doc["num_frames"] == 6 and doc["stats"]["key_frames"] == 2
    assert doc["models"]["propagator"] == str(sam3_video_dir)  # no second checkpoint
    assert doc["stats"]["tracks_started"] >= 1  # threshold 0: the random SAM 3 finds regions
    assert "6 frames" in proc.stdout


def test_track_with_an_image_only_sam3_fails_before_loading(tmp_path):
    from tests.sam.sam3_models import tiny_sam3_folder

    clip = demo_video(2).write(tmp_path / "clip.mp4")
    out = tmp_path / "out"
    folder = tiny_sam3_folder()
    proc = run_cli(["track", clip, "--prompt", "x", "--out", out, "--sam", folder,
                    "--device", "cpu", "-q"])  # fmt: skip
    assert proc.returncode == 1
    lines = error_lines(proc.stderr)
    assert len(lines) == 1 and "image-only SAM 3 save" in lines[0], proc.stderr
    assert "--propagator" in lines[0]
    assert not out.exists() or list(out.iterdir()) == []
