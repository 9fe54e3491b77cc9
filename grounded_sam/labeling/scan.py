"""The images of a labeling job, checked and listed before any model is loaded."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from grounded_sam.inputs import IMAGE_EXTENSIONS, find_images
from grounded_sam.labeling.state import run_file

__all__ = ["IMAGE_EXTENSIONS", "find_images", "is_dataset_dir", "prepare_labeling"]

logger = logging.getLogger(__name__)


def is_dataset_dir(path: Path) -> bool:
    """Whether ``path`` is the output folder of a labeling run (it holds the run's state).

    A labeling scan skips such folders (with a log line), so a dataset written inside the
    images folder, by this run or an earlier one, is never labeled as new images.
    """
    if run_file(path).is_file():
        logger.warning("Skipping %s: it holds a labeled dataset (an earlier labeling run)", path)
        return True
    return False


def prepare_labeling(images_dir: str | os.PathLike, out_dir: str | os.PathLike) -> list[Path]:
    """Check a labeling job's folders and list its images, before any model is loaded.

    Args:
        images_dir: Folder of images (scanned recursively).
        out_dir: DATASET_DIR; may exist (to resume) but must not be a file, the images
            folder itself, or a folder that contains the images folder.

    Returns:
        The images to label (see :func:`~grounded_sam.inputs.find_images`): ``out_dir``
        and every other labeled dataset under ``images_dir`` (:func:`is_dataset_dir`) are
        excluded from the scan, as are FIFOs, devices and sockets.

    Raises:
        FileNotFoundError: ``images_dir`` does not exist.
        ValueError: ``images_dir`` is not a folder or holds no images, or ``out_dir`` is
            not usable.
    """
    src = Path(images_dir)
    out = Path(out_dir)
    if not src.exists():
        raise FileNotFoundError(f"Images folder not found: {src}")
    if not src.is_dir():
        raise ValueError(f"{src} is not a folder: give the folder that holds the images.")
    if out.exists() and not out.is_dir():
        raise ValueError(f"Output path {out} is a file: give a folder for the dataset.")
    src_r, out_r = src.resolve(), out.resolve()
    if out_r == src_r or out_r in src_r.parents:
        raise ValueError(
            f"The output folder {out} contains the images folder {src}: choose a separate "
            "output folder for the dataset."
        )
    images = find_images(src, exclude=[out_r], skip_dir=is_dataset_dir)
    if not images:
        raise ValueError(
            f"No images found in {src} (looked for {', '.join(IMAGE_EXTENSIONS)} in any "
            "case, in all subfolders)."
        )
    return images
