"""The frames of a labeled video as JPEG files: ``SEQ/img1/000001.jpg``, ... (``label --frames``).

Both video formats name a frame so (MOTChallenge's ``img1`` folder, COCO-video's ``file_name``
relative to DATASET_DIR). The frames are decoded again from the source video by the same reader
that tracked it (:func:`grounded_sam.video.reader.open_video`, same ``max_frames``), so frame
``k`` of the files is frame ``k`` of the labels. A sequence's folder is written under a
temporary name and renamed into place when complete; then ``SEQ/.frames_source.json``
records the source file's stamp (:func:`~grounded_sam.labeling.state.source_stamp` of the
version the labels were tracked from) and the frame count. A folder is kept only when that
record matches (a resumed or repeated export does not decode again); a folder of another
version of the video (replaced by a clip of the same length, say), or without the record, is
written again. The
record is outside ``img1`` so that a tool listing that folder sees only frames; it is removed
before a folder is replaced and written after, so a killed export leaves no record that lies.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from grounded_sam.export.files import atomic_write_json
from grounded_sam.video.reader import open_video

__all__ = ["FRAMES_DIR", "SOURCE_FILE", "extract_frames", "frame_name", "prune_frames"]

logger = logging.getLogger(__name__)

FRAMES_DIR = "img1"
"""The frames folder inside a sequence folder (MOTChallenge's name)."""

SOURCE_FILE = ".frames_source.json"
"""The record (in the sequence folder) of which version of the video ``img1`` is from."""


def frame_name(index: int) -> str:
    """``000001.jpg`` for frame index 0 (1-based, six digits, as MOTChallenge)."""
    return f"{index + 1:06d}.jpg"


def _record(stamp: dict[str, int] | None, num_frames: int) -> dict[str, Any]:
    return {"source": stamp, "num_frames": num_frames}


def _is_current(seq_dir: Path, record: dict[str, Any]) -> bool:
    """Whether ``seq_dir/img1`` holds the complete frames of the version ``record`` names."""
    final = seq_dir / FRAMES_DIR
    if record["source"] is None or not final.is_dir():
        return False
    try:
        saved = json.loads((seq_dir / SOURCE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return saved == record and len(list(final.glob("*.jpg"))) == record["num_frames"]


def extract_frames(
    source: Path,
    seq_dir: Path,
    num_frames: int,
    max_frames: int | None,
    quality: int = 95,
    stamp: dict[str, int] | None = None,
) -> Path:
    """Write the frames of ``source`` into ``seq_dir/img1`` (kept when already written).

    Args:
        source: The video file that was tracked.
        seq_dir: The sequence folder (``DATASET_DIR/SEQ``).
        num_frames: Frames its labels have.
        max_frames: The run's ``max_frames`` (None: all).
        quality: JPEG quality.
        stamp: The source stamp the labels were tracked from (saved in the video's state);
            the folder is kept only when it was written from that version with
            ``num_frames`` frames. None: always written again.

    Returns:
        The frames folder.

    Raises:
        ValueError: The video cannot be read, or now has another frame count than its labels.
    """
    import cv2

    final = seq_dir / FRAMES_DIR
    record = _record(stamp, num_frames)
    if _is_current(seq_dir, record):
        return final
    (seq_dir / SOURCE_FILE).unlink(missing_ok=True)
    tmp = seq_dir / f".{FRAMES_DIR}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    n = 0
    try:
        for index, frame in open_video(source, max_frames=max_frames):
            bgr = np.ascontiguousarray(frame[..., ::-1])
            if not cv2.imwrite(str(tmp / frame_name(index)), bgr,
                               [cv2.IMWRITE_JPEG_QUALITY, quality]):  # fmt: skip
                raise OSError(f"Cannot write the frames of {source} into {tmp}.")
            n += 1
        if n != num_frames:
            raise ValueError(
                f"{source} now has {n} frames but its labels have {num_frames}: run the "
                "labeling again (a changed video is tracked again)."
            )
        old = seq_dir / f".{FRAMES_DIR}.old"
        if final.exists():
            if old.exists():
                shutil.rmtree(old)
            os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
        atomic_write_json(seq_dir / SOURCE_FILE, record)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("Wrote %d frames of %s into %s", n, source, final)
    return final


def prune_frames(out: Path, keep: set[str]) -> int:
    """Remove the frames folders this module wrote for sequences no longer in the dataset.

    Only a folder ``out/SEQ`` holding this module's record (:data:`SOURCE_FILE`) loses its
    ``img1`` and the record; the sequence folder itself goes only when that leaves it empty.
    Anything else (a folder without the record, other files) is never touched.

    Args:
        out: DATASET_DIR.
        keep: The sequence names of the dataset now written.

    Returns:
        How many frames folders were removed.
    """
    n = 0
    if not out.is_dir():
        return 0
    for seq_dir in out.iterdir():
        record = seq_dir / SOURCE_FILE
        if seq_dir.name in keep or seq_dir.name.startswith(".") or not record.is_file():
            continue
        shutil.rmtree(seq_dir / FRAMES_DIR, ignore_errors=True)
        record.unlink(missing_ok=True)
        try:
            seq_dir.rmdir()  # only when empty
        except OSError:
            pass
        logger.info("Removed the frames of sequence %s of an earlier export", seq_dir.name)
        n += 1
    return n
