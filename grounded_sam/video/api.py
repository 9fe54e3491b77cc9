"""``GroundedSAM.track``: phrases tracked through a video, with the engine as grounder.

:func:`track` wires the pieces: :func:`~grounded_sam.video.reader.open_video` (frames
streamed), :func:`engine_grounder` (the engine's ``index`` + ``query`` on each key frame,
the same call as ``segment``), a :class:`~grounded_sam.video.propagator.Sam2VideoPropagator`
(SAM 2.1's video predictor) and the :class:`~grounded_sam.video.tracker.VideoTracker`. It
returns a :class:`TrackingRun`: an iterator of ``(frame_index, sv.Detections)`` with
``tracker_id`` set, which also carries the reader (fps, size), the tracks and the timings.

The engine is typed here by what is used of it (:class:`Engine`), so this module does not
import :mod:`grounded_sam.pipeline`, which imports it for ``GroundedSAM.track``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import numpy as np
import supervision as sv

from grounded_sam.grounding.options import QueryOptions
from grounded_sam.inputs import parse_prompt
from grounded_sam.video.reader import VideoReader, VideoSource, open_video
from grounded_sam.video.tracker import VideoTracker
from grounded_sam.video.types import KeyFrameGrounder, Propagator, TrackerSettings

__all__ = ["Engine", "TrackingRun", "engine_grounder", "engine_propagator", "track"]

logger = logging.getLogger(__name__)


class Engine(Protocol):
    """What :func:`track` uses of a :class:`~grounded_sam.GroundedSAM`."""

    options: QueryOptions
    predictor: Any
    model_ids: tuple[str, str]

    def index(self, image: Any, **kwargs: Any) -> Any:
        """Index one image."""
        ...

    def query(self, index: Any, prompt: Any = None, options: Any = None, **knobs: Any) -> Any:
        """Answer a prompt from an index."""
        ...


def engine_grounder(
    gs: Engine, phrases: Sequence[str], options: QueryOptions | None = None
) -> KeyFrameGrounder:
    """The engine as a key-frame grounder: ``gs.query(gs.index(frame), phrases, options)``.

    Args:
        gs: The engine.
        phrases: The parsed phrases.
        options: Query options (None: the engine's).

    Returns:
        A callable frame -> ``sv.Detections`` (masks, confidence, class_id, class_name).
    """
    opts = options or gs.options
    words = list(phrases)

    def ground(frame: np.ndarray) -> sv.Detections:
        return gs.query(gs.index(frame), words, opts)

    return ground


#: SAM families whose own checkpoint propagates masks: SAM 2 / 2.1 (its video predictor) and
#: SAM 3 (its tracker). Any other engine needs a separate propagator checkpoint.
PROPAGATING_FAMILIES = ("sam2", "sam3")


def engine_propagates(gs: Engine) -> bool:
    """Whether the engine's own SAM checkpoint can propagate (no separate propagator needed)."""
    return getattr(gs.predictor, "FAMILY", None) in PROPAGATING_FAMILIES


def check_propagates(spec: str | os.PathLike, flag: str = "--propagator") -> None:
    """Refuse a checkpoint that cannot propagate masks, from its config alone (no weights).

    Args:
        spec: Hub id, alias or folder.
        flag: How the user gave it, for the message (``"--sam"``, ``"--propagator"``).

    Raises:
        ValueError: Neither SAM 2.1 nor SAM 3; the message says what to pass.
        grounded_sam.ModelLoadError: An image-only SAM 3 save (no tracker), or unreadable.
    """
    from grounded_sam.sam.loading import resolve_sam_checkpoint
    from grounded_sam.video.sam3_propagator import check_sam3_tracker

    ckpt = resolve_sam_checkpoint(spec)
    if ckpt.grounder is not None:  # SAM 3: its own tracker, when the checkpoint holds it
        check_sam3_tracker(spec)
    elif ckpt.class_name != "Sam2Model":
        advice = (
            "add --propagator sam2.1_t (or a local SAM 2.1 folder), or ground with --sam "
            "sam2.1_t or --sam sam3"
            if flag == "--sam"
            else "pass a SAM 2.1 checkpoint (sam2.1_t, sam2.1_s, sam2.1_b+, sam2.1_l or a local "
            "folder) or a SAM 3 one (sam3)"
        )
        raise ValueError(
            f"{flag} {os.fspath(spec)} is a {ckpt.family} checkpoint, and tracking propagates "
            f"masks with SAM 2.1's video predictor or SAM 3's tracker: {advice}."
        )


def engine_propagator(gs: Engine, propagator: str | os.PathLike | None = None) -> Propagator:
    """A video propagator for the engine (same device and dtype).

    Args:
        gs: The engine.
        propagator: A SAM 2.1 checkpoint (Hub id, alias or folder; its video predictor) or a SAM
            3 checkpoint (SAM 3's own tracker,
            :class:`~grounded_sam.video.sam3_propagator.Sam3TrackerPropagator`); None: the
            engine's own SAM checkpoint, which must then be SAM 2 / 2.1 or SAM 3 (its image
            encoder, or SAM 3's ViT backbone, is shared).

    Raises:
        ValueError: None given and the engine's SAM is neither SAM 2 nor SAM 3.
        grounded_sam.ModelLoadError: The checkpoint cannot be loaded as a video model.
    """
    from grounded_sam.video.propagator import Sam2VideoPropagator, load_video_model
    from grounded_sam.video.sam3_propagator import (
        Sam3TrackerPropagator,
        is_sam3_checkpoint,
        load_sam3_tracker,
    )

    sam_id = gs.model_ids[0]
    if propagator is None:
        if not engine_propagates(gs):
            raise ValueError(
                f"Tracking propagates masks with SAM 2.1's video predictor or SAM 3's tracker, "
                f"and this engine's SAM ({sam_id or 'unnamed'}) is neither: pass "
                "propagator='sam2.1_t' (or a local SAM 2.1 folder; on the command line "
                "--propagator), or load the engine with a SAM 2.1 or SAM 3 checkpoint "
                "(sam='sam2.1_t', sam='sam3')."
            )
        propagator = sam_id
    device, dtype = gs.predictor.device, gs.predictor.dtype
    if is_sam3_checkpoint(propagator):  # SAM 3's own tracker (the same checkpoint's)
        prop: Sam2VideoPropagator = Sam3TrackerPropagator(
            *load_sam3_tracker(propagator, device, dtype)
        )
    else:
        prop = Sam2VideoPropagator(load_video_model(propagator, device, dtype))
    if os.fspath(propagator) == sam_id and prop.share_image_encoder(gs.predictor.model):
        logger.info("Propagator shares the engine's image encoder (%s)", sam_id)
    return prop


class TrackingRun:
    """One video being tracked: an iterator of ``(frame_index, sv.Detections)``.

    Attributes:
        reader: The video (``fps``, ``size``, ``frame_count``, ``stem``).
        tracker: The tracker (``tracks``, ``stats``, ``settings``).
        phrases: The label names.
        propagator_id: What the propagator was loaded from ("" for a given object).
    """

    def __init__(
        self,
        reader: VideoReader,
        tracker: VideoTracker,
        phrases: list[str],
        propagator_id: str,
        show_progress: bool,
    ) -> None:
        self.reader = reader
        self.tracker = tracker
        self.phrases = phrases
        self.propagator_id = propagator_id
        self._iter = self._run(show_progress)

    def _run(self, show_progress: bool) -> Iterator[tuple[int, np.ndarray, sv.Detections]]:
        from tqdm.auto import tqdm

        total = self.reader.frame_count
        with tqdm(
            total=total, desc="tracking", unit="frame", disable=not show_progress, leave=False
        ) as bar:
            for index, dets in self.tracker.run(self.reader):
                bar.update(1)
                yield index, self.tracker.frame, dets
        logger.info("%s: %s", self.reader.name, self.tracker.stats.summary())

    def __iter__(self) -> TrackingRun:
        return self

    def __next__(self) -> tuple[int, sv.Detections]:
        index, _, dets = next(self._iter)
        return index, dets

    def with_frames(self) -> Iterator[tuple[int, np.ndarray, sv.Detections]]:
        """The same iteration with each frame: ``(frame_index, frame, detections)``.

        ``frame`` is (H, W, 3) uint8 RGB (e.g. to draw on); use this or the plain iteration.
        """
        return self._iter

    def close(self) -> None:
        """Stop early (releases the video decoder)."""
        self._iter.close()
        self.reader.close()

    @property
    def stats(self):
        """The tracker's :class:`~grounded_sam.video.types.TrackStats`."""
        return self.tracker.stats


def track(
    gs: Engine,
    video: VideoSource,
    prompt: str | Sequence[str],
    *,
    every: int | None = None,
    max_frames: int | None = None,
    propagator: Propagator | str | os.PathLike | None = None,
    settings: TrackerSettings | None = None,
    grounder: KeyFrameGrounder | None = None,
    options: QueryOptions | None = None,
    fps: float | None = None,
    show_progress: bool = False,
    **knobs: Any,
) -> TrackingRun:
    """Track the objects that phrases name through a video (the video module's docstrings).

    Frames are read one at a time and each frame's result is yielded as soon as it is known.

    Args:
        gs: The engine (grounds key frames with its index + query).
        video: A video file (OpenCV / PyAV), a folder of frames, or an iterable of (H, W, 3)
            uint8 RGB frames.
        prompt: A phrase, comma-separated phrases, or a list of phrases.
        every: Ground on frame 0 and every ``every`` frames (default 10;
            :class:`~grounded_sam.video.types.TrackerSettings` documents every knob).
        max_frames: Stop after this many frames (None: the whole video).
        propagator: A SAM 2.1 or SAM 3 checkpoint (Hub id, alias such as ``"sam2.1_t"``,
            folder) or a :class:`~grounded_sam.video.types.Propagator`; None: the engine's SAM,
            which must be SAM 2.1 or SAM 3 (SAM 3's own tracker, :func:`engine_propagator`).
        settings: All tracker knobs at once (``every`` overrides its ``every``).
        grounder: Replace the engine's grounding (a frame -> ``sv.Detections`` callable).
        options: Query options for the key frames (default: the engine's).
        fps: Frame rate to report for the video (default: its own, 30 for frames).
        show_progress: A progress bar (frames, frames/s) on stderr.
        **knobs: Changes to ``options`` (``threshold``, ``top_k``, ``refine``, ...).

    Returns:
        A :class:`TrackingRun`, iterating ``(frame_index, detections)`` with ``mask``
        (N, H, W) bool, ``xyxy`` (tight boxes, pixels), ``tracker_id`` (N,), ``confidence``,
        ``class_id``, ``data`` ``class_name`` / ``object_score`` / ``grounded`` (see
        :meth:`~grounded_sam.video.tracker.VideoTracker.run`).

    Raises:
        ValueError: A bad prompt, knob or video (before any model is loaded).
        FileNotFoundError: No such video.
        grounded_sam.ModelLoadError: The propagator cannot be loaded.
    """
    phrases = parse_prompt(prompt)
    opts = (options or gs.options).replace(**knobs)
    if opts.per_image:
        raise ValueError(
            "Points and exemplar boxes belong to one image; tracking takes phrases only (drop "
            "points= / exemplars=)."
        )
    base = settings or TrackerSettings()
    if every is not None:
        base = TrackerSettings(**{**base.as_dict(), "every": every})
    reader = open_video(video, max_frames=max_frames, fps=fps)
    try:
        if propagator is None or isinstance(propagator, (str, os.PathLike)):
            prop_id = os.fspath(propagator) if propagator is not None else gs.model_ids[0]
            prop = engine_propagator(gs, propagator)
        else:
            prop_id, prop = "", propagator
            reset = getattr(prop, "reset", None)
            if callable(reset):  # a propagator used for another video: start afresh
                reset()
        from grounded_sam.results import model_metadata

        models = {**model_metadata(gs.predictor, gs.model_ids), "propagator": prop_id}
        tracker = VideoTracker(
            grounder or engine_grounder(gs, phrases, opts),
            prop,
            phrases,
            base,
            metadata={"model_ids": models, "fps": reader.fps},
        )
    except BaseException:
        reader.close()
        raise
    return TrackingRun(reader, tracker, phrases, prop_id, show_progress)
