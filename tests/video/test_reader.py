"""Reading videos: files, folders, frame sequences; bad input gives one clear line."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from grounded_sam.video.reader import DEFAULT_FPS, open_video
from grounded_sam.video.synthetic import demo_video


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    video = demo_video(12, (64, 96))
    return video, video.write(tmp_path_factory.mktemp("clip") / "clip.mp4")


def test_mp4_file_streams_every_frame(clip):
    video, path = clip
    reader = open_video(path)
    assert (reader.size, reader.fps, reader.stem) == ((64, 96), video.fps, "clip")
    assert reader.frame_count == 12
    frames = list(reader)
    assert [i for i, _ in frames] == list(range(12))
    assert all(f.shape == (64, 96, 3) and f.dtype == np.uint8 for _, f in frames)
    # mp4v is lossy: colours close, shapes where they were
    red = np.all(np.abs(frames[0][1].astype(int) - (220, 40, 40)) < 40, axis=-1)
    assert (red & video.objects[0].mask(0, video.size)).sum() > 0.8 * red.sum() > 0


def test_max_frames_is_respected(clip):
    _, path = clip
    reader = open_video(path, max_frames=5)
    assert reader.frame_count == 5
    assert [i for i, _ in reader] == [0, 1, 2, 3, 4]
    assert [i for i, _ in open_video(path, max_frames=100)][-1] == 11


def test_folder_in_natural_order(tmp_path):
    for i in (10, 2, 1):
        Image.fromarray(np.full((8, 10, 3), i, np.uint8)).save(tmp_path / f"frame_{i}.png")
    (tmp_path / "notes.txt").write_text("not a frame")
    reader = open_video(tmp_path)
    assert (reader.fps, reader.frame_count, reader.size) == (DEFAULT_FPS, 3, (8, 10))
    assert [int(f[0, 0, 0]) for _, f in reader] == [1, 2, 10]


def test_sequences_and_generators():
    video = demo_video(5, (32, 48))
    assert len(list(open_video(video))) == 5  # (index, frame) pairs
    frames = (video.frame(t) for t in range(5))  # a generator: read as it goes
    reader = open_video(frames, max_frames=3, fps=12.5)
    assert reader.frame_count is None and reader.fps == 12.5
    assert len(list(reader)) == 3
    reader = open_video([video.frame(0)] * 4)
    assert reader.frame_count == 4
    with pytest.raises(RuntimeError, match="once"):
        list(reader), list(reader)


def test_unreadable_zero_frames_missing(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"this is not a video at all" * 10)
    with pytest.raises(ValueError, match="not a video that OpenCV or PyAV can read"):
        open_video(bad)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="video"):
        open_video(empty)
    (tmp_path / "none").mkdir()
    with pytest.raises(ValueError, match="holds no frame images"):
        open_video(tmp_path / "none")
    with pytest.raises(ValueError, match="no frames"):
        open_video([])
    with pytest.raises(FileNotFoundError, match="Video not found"):
        open_video(tmp_path / "missing.mp4")


def test_zero_frame_mp4(tmp_path):
    import cv2

    path = tmp_path / "zero.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (32, 32))
    writer.release()  # a container with no frames (or nothing at all)
    with pytest.raises(ValueError) as err:
        open_video(path)
    assert "no frames" in str(err.value) or "not a video" in str(err.value)
    assert "\n" not in str(err.value)


def test_frames_that_change_size(tmp_path):
    for i, size in enumerate([(8, 10), (8, 10), (9, 10)]):
        Image.fromarray(np.zeros((*size, 3), np.uint8)).save(tmp_path / f"f{i}.png")
    reader = open_video(tmp_path)
    frames = iter(reader)
    next(frames), next(frames)
    with pytest.raises(ValueError, match=r"frame 2 is 10x9 but frame 0 is 10x8.*same size"):
        next(frames)
    with pytest.raises(ValueError, match="frame 1 is 4x4"):
        list(open_video([np.zeros((8, 10, 3), np.uint8), np.zeros((4, 4, 3), np.uint8)]))


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, 10**7])
def test_bad_max_frames(bad):
    with pytest.raises(ValueError, match="max_frames"):
        open_video([np.zeros((4, 4, 3), np.uint8)], max_frames=bad)


def test_not_a_video():
    with pytest.raises(TypeError, match="segment"):
        open_video(np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        open_video([np.zeros((4, 4, 3), np.float32)])
    with pytest.raises(ValueError, match="fps"):
        open_video([np.zeros((4, 4, 3), np.uint8)], fps=0)
