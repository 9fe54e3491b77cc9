"""The result files: JSON per frame, MOT text, annotated mp4; never half-written."""

from __future__ import annotations

import json

import numpy as np
import pytest

from grounded_sam.utils.masks import decode_rle
from grounded_sam.video.tracker import VideoTracker
from grounded_sam.video.types import TrackerSettings
from grounded_sam.video.writers import TrackWriter, mot_lines, track_labels

from .standins import ColourGrounder, ColourPropagator
from .test_tracker import CONF, PHRASES, scene


def _tracked(frames=12):
    video = scene(frames)
    tracker = VideoTracker(
        ColourGrounder(video, PHRASES, CONF), ColourPropagator(), PHRASES, TrackerSettings(every=5)
    )
    return video, tracker, list(tracker.run(iter(video)))


def test_json_mot_and_mp4(tmp_path):
    import cv2

    video, tracker, results = _tracked()
    header = {"video": "scene", "prompt": ", ".join(PHRASES), "phrases": PHRASES}
    with TrackWriter(tmp_path, "scene", video.size, 10.0, header) as writer:
        for t, dets in results:
            writer.write(t, video.frame(t), dets)
        paths = writer.close({"tracks": [t.summary() for t in tracker.tracks.values()]})
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "scene.json", "scene.mot.txt", "scene_tracked.mp4"
    ]  # fmt: skip
    doc = json.loads(paths["json"].read_text())
    assert doc["video"] == "scene" and doc["num_frames"] == 12 and len(doc["frames"]) == 12
    assert [t["track_id"] for t in doc["tracks"]] == [1, 2, 3, 4]
    frame5 = doc["frames"][5]
    assert frame5["frame"] == 5 and frame5["num_instances"] == len(results[5][1])
    for rec, mask, tid in zip(
        frame5["instances"], results[5][1].mask, results[5][1].tracker_id, strict=True
    ):
        assert rec["track_id"] == tid and rec["grounded"] is True
        assert 0 < rec["object_score"] <= 1 and rec["label"] in PHRASES
        np.testing.assert_array_equal(decode_rle(rec["mask"]), mask)
        x1, y1, x2, y2 = rec["box"]
        assert rec["area"] == mask.sum() and x2 > x1 and y2 > y1
    lines = paths["mot"].read_text().splitlines()
    assert len(lines) == sum(len(d) for _, d in results)
    first = lines[0].split(",")
    assert first[0] == "1" and first[-3:] == ["-1", "-1", "-1"] and len(first) == 10
    cap = cv2.VideoCapture(str(paths["video"]))
    count = 0
    while cap.read()[0]:
        count += 1
    assert count == 12
    assert (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))) == (
        160, 120
    )  # fmt: skip


def test_nothing_half_written_on_error(tmp_path):
    video, _, results = _tracked(6)
    (tmp_path / "scene.json").write_text('{"old": true}')  # an earlier run's complete file
    with pytest.raises(RuntimeError, match="boom"):
        with TrackWriter(tmp_path, "scene", video.size, 10.0, {}) as writer:
            for t, dets in results:
                writer.write(t, video.frame(t), dets)
                if t == 3:
                    raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene.json"]
    assert json.loads((tmp_path / "scene.json").read_text()) == {"old": True}
    # leaving the block without close() (e.g. a consumer stopping early) writes nothing either
    with TrackWriter(tmp_path / "b", "scene", video.size, 10.0, {}, video=False) as writer:
        writer.write(0, video.frame(0), results[0][1])
    assert list((tmp_path / "b").iterdir()) == []


def test_labels_and_mot_lines():
    _, _, results = _tracked(1)
    dets = results[0][1]
    assert track_labels(dets) == ["red box #1 0.95", "blue disc #2 0.90", "yellow disc #3 0.85"]
    line = mot_lines(0, dets[:1]).strip().split(",")
    x1, y1, x2, y2 = dets.xyxy[0]
    assert line[:2] == ["1", "1"] and float(line[4]) == pytest.approx(x2 - x1)


def test_a_second_run_replaces_the_files_atomically(tmp_path):
    video, _, results = _tracked(4)
    paths = TrackWriter.output_paths(tmp_path, "scene", video=False)
    for header in ({"run": 1}, {"run": 2}):
        with TrackWriter(tmp_path, "scene", video.size, 10.0, header, video=False) as writer:
            for t, dets in results[: 1 + header["run"]]:
                writer.write(t, video.frame(t), dets)
            assert writer.close() == paths
        doc = json.loads(paths["json"].read_text())
        assert (doc["run"], doc["num_frames"]) == (header["run"], 1 + header["run"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene.json", "scene.mot.txt"]
