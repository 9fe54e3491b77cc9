"""Stand-ins that know a synthetic video's objects by their colours.

:class:`ColourGrounder` finds every object whose colour it knows (exactly the pixels of that
colour, i.e. its visible part) and labels it; :class:`ColourPropagator` carries a track by the
colour under its prompt mask. Both see only the frames, as the real grounder and propagator
do, so the tracker is tested on its own logic: matching, new ids, ends.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import supervision as sv

from grounded_sam.video.synthetic import SyntheticVideo
from grounded_sam.video.types import Propagated


def colour_mask(frame: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    return np.all(frame == np.asarray(colour, np.uint8), axis=-1)


class ColourGrounder:
    """Detections of the objects of ``video`` whose labels are in ``phrases``.

    Args:
        video: The video (its objects' colours and labels).
        phrases: Labels to find (class_id = index here).
        confidence: label -> confidence (default 0.9).
        extra: Called with the frame; returns more (mask, label, confidence) detections
            (to inject parts, near-duplicates, ...).
    """

    def __init__(self, video: SyntheticVideo, phrases: Sequence[str], confidence=None, extra=None):
        self.phrases = list(phrases)
        self.colours = {}
        for obj in video.objects:
            if obj.label in self.phrases:
                self.colours[obj.label] = obj.color
        self.confidence = confidence or {}
        self.extra = extra
        self.calls = 0

    def __call__(self, frame: np.ndarray) -> sv.Detections:
        self.calls += 1
        masks, labels, conf = [], [], []
        for label, colour in self.colours.items():
            m = colour_mask(frame, colour)
            if m.any():
                masks.append(m)
                labels.append(label)
                conf.append(self.confidence.get(label, 0.9))
        if self.extra is not None:
            for m, label, c in self.extra(frame):
                masks.append(m)
                labels.append(label)
                conf.append(c)
        order = np.random.default_rng(self.calls).permutation(len(masks))  # any order
        h, w = frame.shape[:2]
        m = np.stack([masks[i] for i in order]) if masks else np.zeros((0, h, w), bool)
        return sv.Detections(
            xyxy=sv.mask_to_xyxy(m).astype(np.float32) if len(m) else np.zeros((0, 4), np.float32),
            mask=m,
            confidence=np.array([conf[i] for i in order], np.float32),
            class_id=np.array([self.phrases.index(labels[i]) for i in order], int),
            data={"class_name": np.array([labels[i] for i in order], dtype=str)},
        )


class ColourPropagator:
    """Propagates each track by the most common colour under its prompt mask."""

    def __init__(self) -> None:
        self.colours: dict[int, np.ndarray] = {}
        self.steps: list[int] = []
        self.added: list[tuple[int, list[int]]] = []
        self.removed: list[tuple[int, list[int]]] = []
        self._index = -1

    def _answer(self, frame: np.ndarray, ids: Sequence[int]) -> Propagated:
        if not ids:
            return Propagated.empty(frame.shape[:2])
        masks = np.stack([np.all(frame == self.colours[t], axis=-1) for t in ids])
        scores = np.where(masks.reshape(len(ids), -1).any(1), 10.0, -10.0).astype(np.float32)
        return Propagated(np.asarray(ids, np.int64), masks, scores)

    def step(self, index: int, frame: np.ndarray) -> Propagated:
        assert index > self._index, "frames must come in increasing order"
        self._index = index
        self.steps.append(index)
        return self._answer(frame, list(self.colours))

    def add(self, index, frame, track_ids, masks, boxes, prompt) -> Propagated:
        assert prompt in ("mask", "box")
        assert index == self._index or not self.steps or index > self._index
        self._index = index
        for tid, m in zip(track_ids, masks, strict=True):
            assert tid not in self.colours, f"track {tid} is live"
            pixels = frame[m]
            values, counts = np.unique(pixels.reshape(-1, 3), axis=0, return_counts=True)
            self.colours[int(tid)] = values[np.argmax(counts)]
        self.added.append((index, [int(t) for t in track_ids]))
        return self._answer(frame, [int(t) for t in track_ids])

    def remove(self, track_ids) -> None:
        self.removed.append((self._index, [int(t) for t in track_ids]))
        for t in track_ids:
            self.colours.pop(int(t), None)
