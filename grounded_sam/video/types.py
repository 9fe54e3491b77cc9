"""The tracker's values and the two interfaces it drives: settings, tracks, propagator, grounder.

:class:`~grounded_sam.video.tracker.VideoTracker` reads these; a propagator (SAM 2.1's video
predictor in :mod:`grounded_sam.video.propagator`, or a test's stand-in) and a key-frame
grounder (the engine's index + query, :func:`grounded_sam.video.api.engine_grounder`) are
anything with the methods below.

The module imports no torch or supervision (``grounded-sam track --help`` reads the defaults
of :class:`TrackerSettings` from it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np

from grounded_sam.inputs import check_int, check_number

if TYPE_CHECKING:
    import supervision as sv

__all__ = [
    "KeyFrameGrounder",
    "MAX_EVERY",
    "MAX_LOST_AFTER",
    "MAX_TRACKS",
    "Propagated",
    "Propagator",
    "Track",
    "TrackStats",
    "TrackerSettings",
]

#: Bounds of the tracker's knobs (a bigger value is refused with a message quoting it).
MAX_EVERY = 1_000_000
MAX_LOST_AFTER = 100_000
MAX_TRACKS = 1_000


@dataclass(frozen=True)
class TrackerSettings:
    """The tracker's knobs (validated on construction).

    Attributes:
        every: Ground the phrases on frame 0 and then every ``every`` frames (key frames);
            between key frames objects are only propagated. 1 grounds every frame (slowest,
            finds new objects at once); larger is faster and finds a new object up to
            ``every - 1`` frames late. Default 10.
        match_iou: A detection on a key frame continues a track when their masks' IoU is at
            least this (greedy, best pairs first). Default 0.5, the usual "same object" bar of
            detection metrics; lower keeps ids through fast motion between key frames, higher
            splits touching objects more readily.
        new_overlap: An unmatched detection starts a new track only when less than this
            fraction of its pixels is already covered by live tracks (else it is a part of a
            tracked object). Default 0.5.
        lost_after: A track ends after this many consecutive frames in which SAM 2's object
            score says the object is not in the frame (logit <= 0) or its mask is empty.
            Default 15 frames (half a second at 30 fps): short occlusions keep the id.
        max_tracks: At most this many live tracks (each costs one propagation per frame);
            further new objects are skipped with a warning. Default 64.
        prompt: How a new track is handed to the propagator: ``"mask"`` (the grounded mask,
            default, as Grounded-SAM-2) or ``"box"`` (its box; SAM 2 decodes its own mask).
    """

    every: int = 10
    match_iou: float = 0.5
    new_overlap: float = 0.5
    lost_after: int = 15
    max_tracks: int = 64
    prompt: Literal["mask", "box"] = "mask"

    def __post_init__(self) -> None:
        check_int("every", self.every, 1, MAX_EVERY)
        check_number("match_iou", self.match_iou, 0.0, 1.0)
        check_number("new_overlap", self.new_overlap, 0.0, 1.0)
        check_int("lost_after", self.lost_after, 1, MAX_LOST_AFTER)
        check_int("max_tracks", self.max_tracks, 1, MAX_TRACKS)
        if self.prompt not in ("mask", "box"):
            raise ValueError(f"prompt must be 'mask' or 'box', got {self.prompt!r}.")

    def as_dict(self) -> dict[str, Any]:
        """The settings as plain JSON values (written into the track JSON)."""
        return asdict(self)


@dataclass(frozen=True)
class Propagated:
    """A propagator's answer for one frame.

    Attributes:
        track_ids: (K,) int64 ids of the tracks it answered for.
        masks: (K, H, W) bool masks at the frame's size.
        object_scores: (K,) float32 SAM 2 object-score logits (> 0: the object is visible).
        low_res_logits: (K, L, L) float32 mask logits at the model's low resolution (SAM 2's
            ``pred_masks``, L = S / 4), when the propagator has them; None otherwise.
    """

    track_ids: np.ndarray
    masks: np.ndarray
    object_scores: np.ndarray
    low_res_logits: np.ndarray | None = None

    @classmethod
    def empty(cls, size: tuple[int, int]) -> Propagated:
        """No tracks."""
        h, w = size
        return cls(np.zeros(0, np.int64), np.zeros((0, h, w), bool), np.zeros(0, np.float32))


class Propagator(Protocol):
    """Carries track masks from frame to frame (SAM 2.1's video predictor, or a stand-in).

    Frames come in increasing order, one :meth:`step` per frame; :meth:`add` prompts new
    tracks on the frame of the last :meth:`step`.
    """

    def step(self, index: int, frame: np.ndarray) -> Propagated:
        """Propagate every live track to frame ``index``.

        Args:
            index: Frame index (increasing, gaps allowed only when nothing is tracked).
            frame: (H, W, 3) uint8 RGB.
        """
        ...

    def add(
        self,
        index: int,
        frame: np.ndarray,
        track_ids: Sequence[int],
        masks: np.ndarray,
        boxes: np.ndarray,
        prompt: str,
    ) -> Propagated:
        """Start tracks on frame ``index`` (the frame of the last :meth:`step`).

        Args:
            index: Frame index.
            frame: (H, W, 3) uint8 RGB (the same frame as the last step).
            track_ids: New ids (never live ones).
            masks: (N, H, W) bool masks of the new objects.
            boxes: (N, 4) float xyxy pixel boxes of the new objects.
            prompt: ``"mask"`` or ``"box"``: which of the two to prompt with.

        Returns:
            The new tracks' masks and object scores on this frame.
        """
        ...

    def remove(self, track_ids: Sequence[int]) -> None:
        """Forget tracks (their memory is freed)."""
        ...


class KeyFrameGrounder(Protocol):
    """Finds the phrases' objects in one frame (the engine's index + query, or a stand-in)."""

    def __call__(self, frame: np.ndarray) -> sv.Detections:
        """Find the objects in one frame.

        Args:
            frame: (H, W, 3) uint8 RGB.

        Returns:
            Detections with ``mask`` (N, H, W) bool, ``confidence`` (N,), ``class_id`` (N,)
            and ``data["class_name"]`` (N,).
        """
        ...


@dataclass
class Track:
    """One tracked object.

    Attributes:
        track_id: Its id (1, 2, ... in order of appearance; never reused in a video).
        label: Class name of the detection that last matched it.
        class_id: Index of ``label`` in the phrases.
        confidence: Grounding confidence of that detection.
        first_frame: Frame it started on.
        last_seen: Last frame it was visible on.
        missed: Consecutive frames it has not been visible.
        ended: Frame it ended on (None while live).
        last_mask: (H, W) bool, its last visible mask (live tracks only).
    """

    track_id: int
    label: str
    class_id: int
    confidence: float
    first_frame: int
    last_seen: int
    missed: int = 0
    ended: int | None = None
    last_mask: np.ndarray | None = field(default=None, repr=False)

    def summary(self) -> dict[str, Any]:
        """Plain JSON values: id, label, class_id, first/last frame, ended."""
        return {
            "track_id": self.track_id,
            "label": self.label,
            "class_id": self.class_id,
            "first_frame": self.first_frame,
            "last_seen": self.last_seen,
            "ended": self.ended,
        }


@dataclass
class TrackStats:
    """Counts and wall times of a tracking run (seconds).

    Attributes:
        frames: Frames processed.
        key_frames: Frames grounded.
        tracks_started: Tracks started (= the largest id).
        tracks_ended: Tracks ended.
        grounding_s: Time in the grounder.
        propagating_s: Time in the propagator.
        total_s: Time in the whole loop, reading frames included (not the consumer's time).
    """

    frames: int = 0
    key_frames: int = 0
    tracks_started: int = 0
    tracks_ended: int = 0
    grounding_s: float = 0.0
    propagating_s: float = 0.0
    total_s: float = 0.0

    def summary(self) -> str:
        """One line: frames, frames/s, track counts, grounding vs propagating share."""
        fps = self.frames / self.total_s if self.total_s > 0 else 0.0
        busy = self.grounding_s + self.propagating_s
        share = 100.0 * self.grounding_s / busy if busy > 0 else 0.0
        return (
            f"{self.frames} frames ({self.key_frames} grounded) in {self.total_s:.1f}s, "
            f"{fps:.2f} frames/s; {self.tracks_started} tracks ({self.tracks_ended} ended); "
            f"grounding {self.grounding_s:.1f}s ({share:.0f}%), "
            f"propagating {self.propagating_s:.1f}s ({100 - share:.0f}%)"
        )
