"""The resume state of a video labeling run: one tracked video per file.

A labeled video is saved under ``DATASET_DIR/.grounded_sam_state/videos/<relative path>.json``
(next to the run's ``run.json``, :mod:`grounded_sam.labeling.state`): the ``track`` command's
per-frame JSON (:class:`grounded_sam.video.writers.TrackWriter`; records with ``track_id``,
label, class_id, confidence, box xyxy pixels, area, mask COCO RLE) with, in its header, the
state ``schema``, the video's relative path and its source file's size and mtime taken before
it was read (:func:`~grounded_sam.labeling.state.source_stamp`). The writer streams frames
into a temporary file and renames it when the video is done, so a video's state file exists
only for a finished video; :func:`load_video_result` reuses it while the source file is
unchanged, exactly as the per-image state. A video that changed loses its state file before it
is tracked again (:func:`discard_video_result`), so a failed re-track leaves no stale result.

``.grounded_sam_state/exported_videos.json`` lists the videos (relative path and source stamp)
of the last export (:func:`record_exported`): exporting again from the state
(:func:`exported_videos`) writes exactly those, not every state file (one of a video deleted
from the source, or left out because it failed, is not in the dataset).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grounded_sam.export.files import atomic_write_json
from grounded_sam.labeling.state import SCHEMA, source_stamp, state_dir

__all__ = [
    "EXPORTED_FILE",
    "LabeledVideo",
    "clear_partial",
    "discard_video_result",
    "exported_videos",
    "load_video_result",
    "read_video_state",
    "record_exported",
    "saved_videos",
    "video_state_folder",
    "video_state_path",
]

logger = logging.getLogger(__name__)

EXPORTED_FILE = "exported_videos.json"
"""The list of the last export's videos, in the state folder."""


def read_video_state(path: Path) -> dict[str, Any]:
    """The saved document of one video.

    Raises:
        ValueError: The file is not readable JSON (one line naming it and what to do).
    """
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(
            f"The saved result {path} is unreadable ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}): delete it and run the labeling "
            "again to track that video again."
        ) from None
    if not isinstance(doc, dict):
        raise ValueError(
            f"The saved result {path} is not a video result: delete it and run the labeling "
            "again to track that video again."
        )
    return doc


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
        """The whole saved document (``frames``, ``tracks``, ``stats``, ...).

        Raises:
            ValueError: The state file is unreadable (the message names it).
        """
        return read_video_state(self.state)


def video_state_folder(out_dir: str | os.PathLike) -> Path:
    """``out_dir/.grounded_sam_state/videos``."""
    return state_dir(out_dir) / "videos"


def video_state_path(out_dir: str | os.PathLike, rel: str) -> Path:
    """The state file of the video at ``rel``: ``videos/<rel>.json``."""
    return video_state_folder(out_dir) / f"{rel}.json"


def _entry(doc: dict[str, Any], path: Path) -> LabeledVideo:
    try:
        return _fields(doc, path)
    except (KeyError, TypeError, ValueError):
        raise ValueError(
            f"The saved result {path} lacks its video's fields (video, width, height, fps, "
            "num_frames): delete it and run the labeling again to track that video again."
        ) from None


def _fields(doc: dict[str, Any], path: Path) -> LabeledVideo:
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


def discard_video_result(out_dir: str | os.PathLike, rel: str) -> None:
    """Delete the state file of ``rel`` (before it is tracked again: it is stale)."""
    path = video_state_path(out_dir, rel)
    if path.is_file():
        logger.info("Discarding the saved result of %s (its video changed)", rel)
        path.unlink()


def saved_videos(out_dir: str | os.PathLike) -> Iterator[LabeledVideo]:
    """Every saved video result (any order).

    Raises:
        ValueError: A state file is unreadable (the message names it).
    """
    for path in video_state_folder(out_dir).rglob("*.json"):
        if not path.name.startswith("."):
            yield _entry(read_video_state(path), path)


def record_exported(out_dir: str | os.PathLike, videos: Iterable[LabeledVideo]) -> Path:
    """Record the videos of an export (``exported_videos.json``) for :func:`exported_videos`."""
    doc = {"schema": SCHEMA, "videos": [{"video": v.rel, "source": v.stamp} for v in videos]}
    return atomic_write_json(state_dir(out_dir) / EXPORTED_FILE, doc, indent=1)


def exported_videos(out_dir: str | os.PathLike) -> list[LabeledVideo]:
    """The saved results of the videos the last export wrote (:func:`record_exported`).

    A listed video whose state file is gone, or now holds another version of the video (a
    later run was interrupted after tracking it again), is left out with a warning: label
    the folder again to export it. A run exported before this list existed: every saved
    result.

    Raises:
        ValueError: The list or a listed state file is unreadable (the message names it).
    """
    path = state_dir(out_dir) / EXPORTED_FILE
    if not path.is_file():
        return list(saved_videos(out_dir))
    try:
        listed = [(str(v["video"]), v["source"])
                  for v in json.loads(path.read_text(encoding="utf-8"))["videos"]]  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError):
        raise ValueError(
            f"The list of exported videos {path} is unreadable: run the labeling again "
            "(same options) to export the dataset."
        ) from None
    videos = []
    for rel, stamp in listed:
        state = video_state_path(out_dir, rel)
        if not state.is_file():
            logger.warning("Leaving out %s: its saved result is gone; label it again", rel)
            continue
        entry = _entry(read_video_state(state), state)
        if entry.stamp != stamp:
            logger.warning(
                "Leaving out %s: its saved result is of another version of the video than the "
                "last export; label the folder again to export it",
                rel,
            )
            continue
        videos.append(entry)
    return videos


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
