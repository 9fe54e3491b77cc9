"""The resume state of a video labeling run: one tracked video per file.

A labeled video is saved under ``DATASET_DIR/.grounded_sam_state/videos/<relative path>.json``
(next to the run's ``run.json``, :mod:`grounded_sam.labeling.state`): the ``track`` command's
per-frame JSON (:class:`grounded_sam.video.writers.TrackWriter`; records with ``track_id``,
label, class_id, confidence, box xyxy pixels, area, mask COCO RLE) with, in its header, the
state ``schema``, the video's relative path and its source file's size and mtime taken before
it was read (:func:`~grounded_sam.labeling.state.source_stamp`). The writer streams frames
into a temporary file and renames it when the video is done, so a video's state file exists
only for a finished video; :func:`load_video_result` reuses it while the source file is
unchanged, exactly as the per-image state.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grounded_sam.labeling.state import SCHEMA, source_stamp, state_dir

__all__ = [
    "LabeledVideo",
    "clear_partial",
    "load_video_result",
    "saved_videos",
    "video_state_folder",
    "video_state_path",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LabeledVideo:
    """One tracked video, as saved in the state folder and exported.

    Attributes:
        rel: Posix path of the video relative to the labeled folder.
        state: Its state file (the per-frame JSON).
        height: Frame height in pixels.
        width: Frame width in pixels.
        fps: Frame rate.
        num_frames: Frames tracked.
        stamp: The :func:`~grounded_sam.labeling.state.source_stamp` of the version of the
            video that was tracked (None: unknown).
    """

    rel: str
    state: Path
    height: int
    width: int
    fps: float
    num_frames: int
    stamp: dict[str, int] | None = None

    def load(self) -> dict[str, Any]:
        """The whole saved document (``frames``, ``tracks``, ``stats``, ...)."""
        return json.loads(self.state.read_text(encoding="utf-8"))


def video_state_folder(out_dir: str | os.PathLike) -> Path:
    """``out_dir/.grounded_sam_state/videos``."""
    return state_dir(out_dir) / "videos"


def video_state_path(out_dir: str | os.PathLike, rel: str) -> Path:
    """The state file of the video at ``rel``: ``videos/<rel>.json``."""
    return video_state_folder(out_dir) / f"{rel}.json"


def _entry(doc: dict[str, Any], path: Path) -> LabeledVideo:
    return LabeledVideo(
        str(doc["video"]),
        path,
        int(doc["height"]),
        int(doc["width"]),
        float(doc["fps"]),
        int(doc["num_frames"]),
        doc.get("source"),
    )


def load_video_result(out_dir: str | os.PathLike, rel: str, source: Path) -> LabeledVideo | None:
    """The saved result of the video at ``rel``, if it is still that of ``source``.

    Returns:
        The result, or None when there is none, it is unreadable (logged) or the source
        file's size or mtime changed since.
    """
    path = video_state_path(out_dir, rel)
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if doc.get("schema") != SCHEMA or doc.get("source") != source_stamp(source):
            return None
        return _entry(doc, path)
    except (OSError, ValueError, KeyError, TypeError):
        logger.warning("Ignoring unreadable saved result %s; labeling %s again", path, rel)
        return None


def saved_videos(out_dir: str | os.PathLike) -> Iterator[LabeledVideo]:
    """Every saved video result (any order)."""
    for path in video_state_folder(out_dir).rglob("*.json"):
        yield _entry(json.loads(path.read_text(encoding="utf-8")), path)


def clear_partial(out_dir: str | os.PathLike) -> int:
    """Delete the temporary files of videos a killed run was tracking (``.NAME.*.tmp``).

    Call it only while holding the dataset lock: then no other run is writing them.

    Returns:
        How many files were deleted.
    """
    n = 0
    for path in video_state_folder(out_dir).rglob(".*.tmp"):
        if path.is_file():
            path.unlink(missing_ok=True)
            n += 1
    if n:
        logger.info("Removed %d partial file(s) of an interrupted run", n)
    return n
