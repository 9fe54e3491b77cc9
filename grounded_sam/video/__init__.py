"""Text-prompted video: key-frame grounding + SAM 2.1 or SAM 3 propagation with stable track ids.

``gs.track(video, "person, car", every=10)`` (:func:`grounded_sam.video.api.track`) yields
``(frame_index, sv.Detections)`` with ``tracker_id`` set; ``grounded-sam track`` writes the
per-frame JSON, MOT text and an annotated mp4 (:mod:`grounded_sam.video.writers`).

Modules: :mod:`~grounded_sam.video.reader` (frames, streamed), :mod:`~grounded_sam.video.types`
(settings, the propagator and grounder interfaces), :mod:`~grounded_sam.video.matching`
(mask IoU, matching), :mod:`~grounded_sam.video.tracker` (the loop: match, start, end
tracks), :mod:`~grounded_sam.video.propagator` (SAM 2.1's video predictor through
transformers, bounded memory), :mod:`~grounded_sam.video.sam3_propagator` (SAM 3's own
tracker, the same code), :mod:`~grounded_sam.video.writers` (files),
:mod:`~grounded_sam.video.api` (the engine wired in), :mod:`~grounded_sam.video.synthetic`
(videos with known objects), :mod:`~grounded_sam.video.tiny` and
:mod:`~grounded_sam.video.sam3_tiny` (tiny random SAM 2.1 / SAM 3 video checkpoints).

The names below are imported on first use, so that ``grounded-sam track --help`` imports
neither torch nor supervision.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from grounded_sam.video.api import TrackingRun, track
    from grounded_sam.video.propagator import Sam2VideoPropagator
    from grounded_sam.video.reader import VideoReader, open_video
    from grounded_sam.video.sam3_propagator import Sam3TrackerPropagator
    from grounded_sam.video.tracker import VideoTracker
    from grounded_sam.video.types import (
        KeyFrameGrounder,
        Propagated,
        Propagator,
        Track,
        TrackerSettings,
        TrackStats,
    )

_LAZY: dict[str, str] = {
    "KeyFrameGrounder": "grounded_sam.video.types",
    "Propagated": "grounded_sam.video.types",
    "Propagator": "grounded_sam.video.types",
    "Sam2VideoPropagator": "grounded_sam.video.propagator",
    "Sam3TrackerPropagator": "grounded_sam.video.sam3_propagator",
    "Track": "grounded_sam.video.types",
    "TrackStats": "grounded_sam.video.types",
    "TrackerSettings": "grounded_sam.video.types",
    "TrackingRun": "grounded_sam.video.api",
    "VideoReader": "grounded_sam.video.reader",
    "VideoTracker": "grounded_sam.video.tracker",
    "open_video": "grounded_sam.video.reader",
    "track": "grounded_sam.video.api",
}

__all__ = [
    "KeyFrameGrounder",
    "Propagated",
    "Propagator",
    "Sam2VideoPropagator",
    "Sam3TrackerPropagator",
    "Track",
    "TrackStats",
    "TrackerSettings",
    "TrackingRun",
    "VideoReader",
    "VideoTracker",
    "open_video",
    "track",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'grounded_sam.video' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
