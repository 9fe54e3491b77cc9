"""The frames of a labeled video as JPEG files: ``SEQ/img1/000001.jpg``, ... (``label --frames``).

Both video formats name a frame so (MOTChallenge's ``img1`` folder, COCO-video's ``file_name``
relative to DATASET_DIR). The frames are decoded again from the source video by the same reader
that tracked it (:func:`grounded_sam.video.reader.open_video`, same ``max_frames``), so frame
``k`` of the files is frame ``k`` of the labels. A sequence's folder is written under a
temporary name and renamed into place when complete; a folder that already holds the right
number of frames is kept (a resumed or repeated export does not decode again).
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np

from grounded_sam.video.reader import open_video

__all__ = ["FRAMES_DIR", "extract_frames", "frame_name"]

logger = logging.getLogger(__name__)

FRAMES_DIR = "img1"
"""The frames folder inside a sequence folder (MOTChallenge's name)."""


def frame_name(index: int) -> str:
    """``000001.jpg`` for frame index 0 (1-based, six digits, as MOTChallenge)."""
    return f"{index + 1:06d}.jpg"


def extract_frames(
    source: Path, seq_dir: Path, num_frames: int, max_frames: int | None, quality: int = 95
) -> Path:
    """Write the frames of ``source`` into ``seq_dir/img1`` (kept when already complete).

    Args:
        source: The video file that was tracked.
        seq_dir: The sequence folder (``DATASET_DIR/SEQ``).
        num_frames: Frames its labels have.
        max_frames: The run's ``max_frames`` (None: all).
        quality: JPEG quality.

    Returns:
        The frames folder.

    Raises:
        ValueError: The video cannot be read, or now has another frame count than its labels.
    """
    import cv2

    final = seq_dir / FRAMES_DIR
    if final.is_dir() and len(list(final.glob("*.jpg"))) == num_frames:
        return final
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
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("Wrote %d frames of %s into %s", n, source, final)
    return final
