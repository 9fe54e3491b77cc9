"""Text-prompted tracking: key-frame grounding, mask propagation, stable track ids.

How a video is tracked (:class:`VideoTracker`), frame by frame:

1. **Propagate.** Every live track's mask is carried to the new frame by a
   :class:`Propagator` (SAM 2.1's memory-based video predictor,
   :class:`~grounded_sam.video.propagator.Sam2VideoPropagator`). It also says, with SAM 2's
   *object score* (a logit; > 0: the object is in the frame), whether the object is still
   visible.
2. **Ground on key frames.** On frame 0 and then every ``every`` frames the phrases are
   grounded on the frame by a :class:`KeyFrameGrounder` (the engine's index + query: CLIP over
   SAM proposals, re-prompted by SAM; see :func:`grounded_sam.video.api.engine_grounder`).
3. **Match.** Each detection is matched to the track whose mask on this frame overlaps it
   most, greedily by decreasing mask IoU, when that IoU is at least ``match_iou`` (a track
   whose object is not visible now is matched by its last visible mask, and is re-seeded with
   the detection's mask). A matched track keeps its id and takes the detection's label and
   confidence. An unmatched detection starts a **new track with a new id**, unless
   ``new_overlap`` or more of its pixels already belong to tracks (a part of a tracked
   object, not a new one), or ``max_tracks`` tracks are live.
4. **End.** A track whose object score says "not in the frame" (or whose mask is empty) for
   ``lost_after`` consecutive frames ends: the propagator forgets it, and an object seen again
   later gets a new id (no re-identification).

The grounder and the propagator are small interfaces, so the tests drive this loop with
stand-ins that know a synthetic video's objects (tests/video), and the real ones plug in
unchanged.

Thread safety: a :class:`VideoTracker` is one video's state; use one per video.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import supervision as sv

from grounded_sam.video.matching import mask_iou, match_detections, tight_xyxy
from grounded_sam.video.types import (
    KeyFrameGrounder,
    Propagated,
    Propagator,
    Track,
    TrackerSettings,
    TrackStats,
)

__all__ = ["VideoTracker"]

logger = logging.getLogger(__name__)


class VideoTracker:
    """Key-frame grounding + propagation with stable ids (see the module docstring).

    Args:
        grounder: Finds the phrases' objects on a key frame.
        propagator: Carries masks between frames (fresh: no live tracks).
        phrases: The label names ``class_id`` indexes (for the results' metadata).
        settings: The knobs.
        metadata: Extra ``Detections.metadata`` (e.g. model ids) for every frame's result.

    Attributes:
        tracks: Every track of the run so far, by id (ended ones too; their masks dropped).
        stats: Counts and times.
        frame: The frame of the result last yielded by :meth:`run`.
    """

    def __init__(
        self,
        grounder: KeyFrameGrounder,
        propagator: Propagator,
        phrases: Sequence[str],
        settings: TrackerSettings | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self.grounder = grounder
        self.propagator = propagator
        self.phrases = [str(p) for p in phrases]
        self.settings = settings or TrackerSettings()
        self.metadata = dict(metadata or {})
        self.tracks: dict[int, Track] = {}
        self.stats = TrackStats()
        self.frame: np.ndarray | None = None
        self._next_id = 1

    @property
    def live(self) -> list[Track]:
        """Live tracks, by id."""
        return [t for t in self.tracks.values() if t.ended is None]

    def run(self, frames: Iterable[tuple[int, np.ndarray]]) -> Iterator[tuple[int, sv.Detections]]:
        """Track through ``frames``, yielding each frame's result as soon as it is known.

        Args:
            frames: ``(index, (H, W, 3) uint8 RGB)`` in increasing index order, one size.

        Yields:
            ``(index, detections)``: the tracks visible on that frame, by track id:
            ``mask`` (N, H, W) bool, ``xyxy`` tight boxes (pixels, x2/y2 exclusive),
            ``tracker_id`` (N,) int, ``confidence`` (the grounding confidence of the
            detection that last matched the track), ``class_id`` and ``data`` with
            ``class_name``, ``object_score`` (sigmoid of SAM 2's object-score logit; 1.0 on
            a frame where the track was grounded with a mask prompt) and ``grounded``
            (True where the track was matched or started by this frame's grounding).
        """
        t_start = time.perf_counter()
        iterator = iter(frames)
        while True:
            t0 = time.perf_counter()
            try:
                index, frame = next(iterator)
            except StopIteration:
                break
            result = self._frame(index, frame)
            self.frame = frame
            self.stats.frames += 1
            self.stats.total_s += time.perf_counter() - t0
            yield index, result
        # the consumer's time between frames is not ours: total_s sums our per-frame times
        logger.info("Tracked %s (%.1fs wall)", self.stats.summary(), time.perf_counter() - t_start)

    # -- one frame ---------------------------------------------------------------------------

    def _frame(self, index: int, frame: np.ndarray) -> sv.Detections:
        s = self.settings
        t0 = time.perf_counter()
        prop = (
            self.propagator.step(index, frame) if self.live else Propagated.empty(frame.shape[:2])
        )
        self.stats.propagating_s += time.perf_counter() - t0
        masks = {int(t): m for t, m in zip(prop.track_ids, prop.masks, strict=True)}
        scores = {int(t): float(v) for t, v in zip(prop.track_ids, prop.object_scores, strict=True)}
        grounded: set[int] = set()
        self._update(index, masks, scores)
        if index % s.every == 0:
            self.stats.key_frames += 1
            t1 = time.perf_counter()
            dets = self.grounder(frame)
            self.stats.grounding_s += time.perf_counter() - t1
            grounded = self._ground(index, frame, dets, masks, scores)
        return self._result(index, frame.shape[:2], masks, scores, grounded)

    def _update(self, index: int, masks: dict[int, np.ndarray], scores: dict[int, float]) -> None:
        """Visibility bookkeeping after a propagation step; ends lost tracks."""
        ended = []
        for track in self.live:
            if _visible(masks, scores, track.track_id):
                track.missed, track.last_seen = 0, index
                track.last_mask = masks[track.track_id]
            else:
                track.missed += 1
                if track.missed >= self.settings.lost_after:
                    track.ended, track.last_mask = index, None
                    ended.append(track.track_id)
        if ended:
            logger.debug("Frame %d: tracks %s ended", index, ended)
            self.propagator.remove(ended)
            self.stats.tracks_ended += len(ended)
            for tid in ended:
                masks.pop(tid, None)
                scores.pop(tid, None)

    def _ground(
        self,
        index: int,
        frame: np.ndarray,
        dets: sv.Detections,
        masks: dict[int, np.ndarray],
        scores: dict[int, float],
    ) -> set[int]:
        """Match a key frame's detections to tracks; start and re-seed tracks."""
        s = self.settings
        size = frame.shape[:2]
        if len(dets) == 0:
            return set()
        det_masks = _detection_masks(dets, size)
        names = _class_names(dets)
        class_ids = dets.class_id if dets.class_id is not None else np.zeros(len(dets), int)
        conf = dets.confidence if dets.confidence is not None else np.ones(len(dets), np.float32)
        live = [t for t in self.live if t.last_mask is not None]
        visible = {t.track_id for t in live if _visible(masks, scores, t.track_id)}
        # a track visible now is matched by its mask here, a hidden one by its last visible mask
        ref = {
            t.track_id: masks[t.track_id] if t.track_id in visible else t.last_mask for t in live
        }
        refs = np.stack([ref[t.track_id] for t in live]) if live else None
        pairs = match_detections(mask_iou(det_masks, refs), s.match_iou) if live else []
        grounded: set[int] = set()
        seeds: list[tuple[Track, int]] = []
        for d, k in pairs:
            track = live[k]
            track.label, track.class_id = names[d], int(class_ids[d])
            track.confidence = float(conf[d])
            grounded.add(track.track_id)
            if track.track_id not in visible:
                seeds.append((track, d))  # matched while hidden: start its propagation afresh
        matched = {d for d, _ in pairs}
        covered = np.zeros(size, bool)
        for m in ref.values():
            covered |= m
        new: list[int] = []
        for d in np.argsort(-np.asarray(conf), kind="stable").tolist():
            if d in matched:
                continue
            area = int(det_masks[d].sum())
            if area == 0 or (det_masks[d] & covered).sum() >= s.new_overlap * area:
                continue
            if len(self.live) + len(new) >= s.max_tracks:
                logger.warning(
                    "Frame %d: %d live tracks (max_tracks); a new %r is not tracked",
                    index,
                    s.max_tracks,
                    names[d],
                )
                break
            new.append(d)
            covered |= det_masks[d]
        started = []
        for d in new:
            tid = self._next_id
            self._next_id += 1
            self.tracks[tid] = Track(tid, names[d], int(class_ids[d]), float(conf[d]), index, index)
            started.append(tid)
        self.stats.tracks_started += len(started)
        if seeds:
            self.propagator.remove([t.track_id for t, _ in seeds])
        ids = [t.track_id for t, _ in seeds] + started
        rows = [d for _, d in seeds] + new
        if ids:
            t0 = time.perf_counter()
            boxes = tight_xyxy(det_masks[rows])
            out = self.propagator.add(index, frame, ids, det_masks[rows], boxes, s.prompt)
            self.stats.propagating_s += time.perf_counter() - t0
            for tid, mask, score in zip(out.track_ids, out.masks, out.object_scores, strict=True):
                tid = int(tid)
                masks[tid], scores[tid] = mask, float(score)
                track = self.tracks[tid]
                if float(score) > 0 and mask.any():
                    track.missed, track.last_seen, track.last_mask = 0, index, mask
            grounded.update(ids)
        if started:
            logger.debug("Frame %d: new tracks %s", index, started)
        return grounded

    def _result(
        self,
        index: int,
        size: tuple[int, int],
        masks: dict[int, np.ndarray],
        scores: dict[int, float],
        grounded: set[int],
    ) -> sv.Detections:
        """The visible live tracks as Detections (by track id)."""
        h, w = size
        shown = [t for t in self.live if _visible(masks, scores, t.track_id)]
        m = np.stack([masks[t.track_id] for t in shown]) if shown else np.zeros((0, h, w), bool)
        logits = np.array([scores[t.track_id] for t in shown], np.float64)
        metadata = {
            "image_size": (h, w),
            "width": w,
            "height": h,
            "phrases": list(self.phrases),
            "frame_index": int(index),
            **self.metadata,
        }
        return sv.Detections(
            xyxy=tight_xyxy(m),
            mask=m,
            confidence=np.array([t.confidence for t in shown], np.float32),
            class_id=np.array([t.class_id for t in shown], int),
            tracker_id=np.array([t.track_id for t in shown], int),
            data={
                "class_name": np.array([t.label for t in shown], dtype=str)
                if shown
                else np.zeros(0, dtype=str),
                "object_score": (1.0 / (1.0 + np.exp(-np.clip(logits, -50, 50)))).astype(
                    np.float32
                ),
                "grounded": np.array([t.track_id in grounded for t in shown], bool),
            },
            metadata=metadata,
        )


def _visible(masks: dict[int, np.ndarray], scores: dict[int, float], track_id: int) -> bool:
    """SAM 2's test: object score logit > 0, and a non-empty mask."""
    mask = masks.get(track_id)
    return mask is not None and scores[track_id] > 0 and bool(mask.any())


def _detection_masks(dets: sv.Detections, size: tuple[int, int]) -> np.ndarray:
    """(N, H, W) bool masks of a grounder's detections (boxes filled when it gave none)."""
    h, w = size
    if dets.mask is not None:
        masks = np.asarray(dets.mask, bool)
        if masks.shape[1:] != (h, w):
            raise ValueError(f"The grounder's masks are {masks.shape[1:]}, the frame {(h, w)}.")
        return masks
    masks = np.zeros((len(dets), h, w), bool)
    for i, (x1, y1, x2, y2) in enumerate(np.asarray(dets.xyxy)):
        masks[i, max(0, int(y1)) : int(np.ceil(y2)), max(0, int(x1)) : int(np.ceil(x2))] = True
    return masks


def _class_names(dets: sv.Detections) -> list[str]:
    names = dets.data.get("class_name") if dets.data else None
    if names is not None and len(names) == len(dets):
        return [str(n) for n in names]
    if dets.class_id is not None:
        return [str(int(c)) for c in dets.class_id]
    return ["object"] * len(dets)
