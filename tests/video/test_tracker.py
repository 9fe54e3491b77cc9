"""The tracker's logic on a synthetic video, with stand-ins that know its objects (oracle).

The video has objects that move, one that appears late (green, frame 7), one that leaves
(blue, after frame 12) and comes back much later (frame 21: a new object, new id), and one
hidden for three frames only (yellow, frames 6-8: the same object, same id).
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

from grounded_sam.video.matching import mask_iou, match_detections, tight_xyxy
from grounded_sam.video.synthetic import MovingObject, SyntheticVideo
from grounded_sam.video.tracker import VideoTracker
from grounded_sam.video.types import Propagated, TrackerSettings

from .standins import ColourGrounder, ColourPropagator

RED, BLUE, GREEN, YELLOW = (220, 40, 40), (40, 60, 220), (40, 200, 60), (230, 220, 40)
PHRASES = ["red box", "blue disc", "green box", "yellow disc"]
CONF = {"red box": 0.95, "blue disc": 0.9, "yellow disc": 0.85, "green box": 0.8}


def scene(num_frames: int = 30) -> SyntheticVideo:
    """Four horizontal bands, one object each (they never overlap)."""
    objects = (
        MovingObject("red box", "box", RED, 8, (20, 15), (3.0, 0.0)),
        MovingObject("blue disc", "disc", BLUE, 8, (140, 45), (-2.5, 0.0), 0, 12),
        MovingObject("green box", "box", GREEN, 8, (30, 75), (2.0, 0.0), 7),
        MovingObject("yellow disc", "disc", YELLOW, 8, (40, 105), (2.0, 0.0), 0, 5),
        MovingObject("yellow disc", "disc", YELLOW, 8, (58, 105), (2.0, 0.0), 9),
        MovingObject("blue disc", "disc", BLUE, 8, (60, 45), (1.5, 0.0), 21),
    )
    return SyntheticVideo(objects, (120, 160), num_frames)


def run(video, settings, grounder=None, propagator=None):
    grounder = grounder or ColourGrounder(video, PHRASES, CONF)
    propagator = propagator or ColourPropagator()
    tracker = VideoTracker(grounder, propagator, PHRASES, settings)
    results = dict(tracker.run(iter(video)))
    return tracker, results, grounder, propagator


def identities(video: SyntheticVideo, results) -> dict[int, set[str]]:
    """track id -> the labels of the ground-truth objects it covered (exact masks)."""
    seen: dict[int, set[str]] = {}
    for t, dets in results.items():
        gt = video.masks(t)
        for tid, mask, name in zip(
            dets.tracker_id, dets.mask, dets.data["class_name"], strict=True
        ):
            match = [i for i, m in gt.items() if np.array_equal(m, mask)]
            assert len(match) == 1, f"frame {t}: track {tid} is not exactly one object"
            label = video.objects[match[0]].label
            assert label == name
            seen.setdefault(int(tid), set()).add(f"{label}@{video.objects[match[0]].first}")
    return seen


def frames_of(results, tid: int) -> list[int]:
    return [t for t, d in results.items() if tid in d.tracker_id.tolist()]


def test_ids_stable_new_object_new_id_vanished_one_ends():
    video = scene()
    tracker, results, grounder, prop = run(video, TrackerSettings(every=5, lost_after=4))
    assert sorted(results) == list(range(30))
    assert grounder.calls == 6  # frames 0, 5, 10, 15, 20, 25
    # ids in order of appearance; frame 0 by confidence
    names = {tid: t.label for tid, t in tracker.tracks.items()}
    assert names == {1: "red box", 2: "blue disc", 3: "yellow disc", 4: "green box", 5: "blue disc"}
    # every id is one object throughout (the two yellow pieces are one object, hidden 3 frames)
    ident = identities(video, results)
    assert ident == {
        1: {"red box@0"},
        2: {"blue disc@0"},
        3: {"yellow disc@0", "yellow disc@9"},
        4: {"green box@7"},
        5: {"blue disc@21"},
    }
    # red: every frame; yellow: not while hidden; green: from the first key frame after 7
    assert frames_of(results, 1) == list(range(30))
    assert frames_of(results, 3) == [t for t in range(30) if not 6 <= t <= 8]
    assert frames_of(results, 4) == list(range(10, 30))
    # blue leaves after 12: gone from frame 13, ended after lost_after=4 frames (frame 16);
    # back at 21 it is a new object, found on key frame 25
    assert frames_of(results, 2) == list(range(0, 13))
    assert tracker.tracks[2].ended == 16 and tracker.tracks[2].last_seen == 12
    assert (16, [2]) in prop.removed
    assert frames_of(results, 5) == list(range(25, 30))
    assert tracker.tracks[3].ended is None  # 3 hidden frames < lost_after
    assert tracker.stats.tracks_started == 5 and tracker.stats.tracks_ended == 1
    assert tracker.stats.key_frames == 6 and tracker.stats.frames == 30


def test_result_fields():
    video = scene(12)
    _, results, _, _ = run(video, TrackerSettings(every=5, lost_after=4))
    dets = results[5]
    assert dets.tracker_id.tolist() == [1, 2, 3]
    assert dets.mask.shape == (3, 120, 160) and dets.mask.dtype == bool
    np.testing.assert_allclose(dets.confidence, [0.95, 0.9, 0.85])
    assert dets.class_id.tolist() == [0, 1, 3]
    assert dets.data["grounded"].tolist() == [True, True, True]
    assert not results[6].data["grounded"].any()
    assert (results[6].data["object_score"] > 0.99).all()
    np.testing.assert_array_equal(dets.xyxy, tight_xyxy(dets.mask))
    assert dets.metadata["frame_index"] == 5 and dets.metadata["phrases"] == PHRASES


def test_every_frame_grounding_finds_objects_at_once():
    video = scene()
    tracker, results, grounder, _ = run(video, TrackerSettings(every=1, lost_after=4))
    assert grounder.calls == 30
    assert frames_of(results, 4) == list(range(7, 30))  # green from its first frame
    assert tracker.tracks[5].first_frame == 21  # blue's comeback, at once
    assert identities(video, results)[3] == {"yellow disc@0", "yellow disc@9"}


def test_short_lost_after_splits_a_hidden_object():
    video = scene()
    tracker, results, _, _ = run(video, TrackerSettings(every=5, lost_after=2))
    # yellow hidden for 3 frames > 2: its track ends and it comes back as a new track
    assert tracker.tracks[3].ended == 7
    yellow = [tid for tid, t in tracker.tracks.items() if t.label == "yellow disc"]
    assert len(yellow) == 2 and tracker.tracks[yellow[1]].first_frame == 10


def _red(frame):
    return np.all(frame == np.asarray(RED, np.uint8), axis=-1)


def test_parts_of_tracked_objects_start_no_track():
    video = scene(10)  # key frames 0 and 5 (green enters at 7: not found yet)

    def part(frame):  # the left half of the red box, as another phrase, less confident
        m = _red(frame)
        cols = np.flatnonzero(m.any(0))
        m[:, cols[len(cols) // 2] :] = False
        return [(m, "green box", 0.6)]

    grounder = ColourGrounder(video, PHRASES, CONF, extra=part)
    tracker = run(video, TrackerSettings(every=5), grounder)[0]
    # the part lies inside the red track (covered 100% >= new_overlap) on frames 0 and 5;
    # it matches nothing (IoU ~0.47 < match_iou) and starts nothing
    assert [t.label for t in tracker.tracks.values()] == ["red box", "blue disc", "yellow disc"]


def shifted(frame):  # the red box shifted by 6 px: IoU 11/23 ~0.48, 11/17 ~0.65 covered
    return np.roll(_red(frame), 6, axis=1)


def test_new_overlap_decides_whether_an_unmatched_detection_is_new():
    video = scene(5)  # one key frame: frame 0

    def extra(frame):
        return [(shifted(frame), "red box", 0.5)]

    lenient = run(video, TrackerSettings(every=5, new_overlap=1.0),
                  ColourGrounder(video, ["red box"], CONF, extra=extra))[0]  # fmt: skip
    assert len(lenient.tracks) == 2  # 65% covered < 100%: a second object
    strict = run(video, TrackerSettings(every=5, new_overlap=0.5),
                 ColourGrounder(video, ["red box"], CONF, extra=extra))[0]  # fmt: skip
    assert len(strict.tracks) == 1  # 65% of it is tracked already: not a new object


class ShiftedRedGrounder(ColourGrounder):
    """Frame 0: the red box exactly; later key frames: 6 px off (IoU ~0.48 with the track)."""

    def __call__(self, frame):
        dets = super().__call__(frame)
        if self.calls > 1:
            dets.mask[0] = shifted(frame)
        return dets


@pytest.mark.parametrize(("match_iou", "new_ids"), [(0.4, 1), (0.5, 2)])
def test_match_iou_decides_whether_a_detection_continues_a_track(match_iou, new_ids):
    video = scene(6)
    grounder = ShiftedRedGrounder(video, ["red box"], CONF)
    tracker, results, _, _ = run(
        video, TrackerSettings(every=5, match_iou=match_iou, new_overlap=1.0), grounder
    )
    assert len(tracker.tracks) == new_ids
    assert results[5].data["grounded"].tolist() == ([True] if new_ids == 1 else [False, True])


def test_max_tracks_bounds_live_tracks(caplog):
    video = scene(6)
    with caplog.at_level(logging.WARNING):
        tracker = run(video, TrackerSettings(every=5, max_tracks=2))[0]
    assert [t.label for t in tracker.tracks.values()] == ["red box", "blue disc"]
    assert "max_tracks" in caplog.text


class FlakyPropagator(ColourPropagator):
    """Loses track 1 on frames 3 and 4 (object score < 0), as a real tracker might."""

    def step(self, index, frame):
        out = super().step(index, frame)
        if index in (3, 4):
            keep = out.track_ids != 1
            scores = np.where(keep, out.object_scores, -5.0).astype(np.float32)
            masks = out.masks & keep[:, None, None]
            out = Propagated(out.track_ids, masks, scores)
        return out


def test_a_hidden_track_grounded_again_is_reseeded_with_its_id():
    video = scene(8)
    prop = FlakyPropagator()
    settings = TrackerSettings(every=2, lost_after=5, match_iou=0.3)  # red moves 3 px a frame
    tracker, results, _, _ = run(video, settings, propagator=prop)
    assert 1 not in results[3].tracker_id  # lost on frame 3 (not a key frame)
    assert 1 in results[4].tracker_id  # frame 4: grounded, matched by its last mask
    assert (4, [1]) in prop.removed and (4, [1]) in prop.added  # re-seeded, same id
    assert tracker.stats.tracks_started == 3 and len(tracker.tracks) == 3


def test_settings_are_validated():
    for bad in ({"every": 0}, {"every": -3}, {"every": 2.5}, {"every": 10**9}, {"lost_after": 0},
                {"match_iou": 1.5}, {"max_tracks": 0}, {"prompt": "points"}):  # fmt: skip
        with pytest.raises(ValueError, match=next(iter(bad))):
            TrackerSettings(**bad)


def test_matching_helpers():
    a = np.zeros((2, 4, 4), bool)
    a[0, :2, :2] = True
    a[1, 2:, 2:] = True
    b = np.stack([a[1], a[0] | a[1]])
    iou = mask_iou(a, b)
    np.testing.assert_allclose(iou, [[0.0, 0.5], [1.0, 0.5]])
    assert match_detections(iou, 0.5) == [(1, 0), (0, 1)]
    assert match_detections(iou, 0.6) == [(1, 0)]
    assert mask_iou(a[:0], b).shape == (0, 2)
    np.testing.assert_array_equal(tight_xyxy(a), [[0, 0, 2, 2], [2, 2, 4, 4]])
    assert tight_xyxy(np.zeros((1, 3, 3), bool)).tolist() == [[0, 0, 0, 0]]
