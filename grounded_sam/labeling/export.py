"""Writing the dataset of labeled images: the final step of every way of labeling.

:func:`export_labeled` writes the images given (one machine and a Ray cluster both end
here); :func:`export_dataset` writes again from the saved results alone (no model), e.g. in
another format. Images are copied into ``images/`` under their flat names
(:func:`grounded_sam.export.files.flat_names`), the annotation files are staged in the state
folder and moved into place, and files a previous export left that this one does not have
are removed.
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from grounded_sam.export.files import atomic_copy, flat_names
from grounded_sam.inputs import image_file_size
from grounded_sam.labeling.formats.coco import write_coco
from grounded_sam.labeling.formats.common import ExportJob, Writer, prune
from grounded_sam.labeling.formats.voc import write_voc
from grounded_sam.labeling.formats.yolo import write_yolo
from grounded_sam.labeling.lock import dataset_lock
from grounded_sam.labeling.state import (
    LabeledImage,
    read_run_config,
    run_file,
    saved_results,
    state_dir,
)

__all__ = ["FORMATS", "check_format", "export_dataset", "export_labeled", "write_dataset"]

_WRITERS: dict[str, Writer] = {"coco": write_coco, "yolo": write_yolo, "voc": write_voc}

FORMATS = tuple(_WRITERS)
"""Dataset formats :func:`export_dataset` writes: ``("coco", "yolo", "voc")``."""


def check_format(fmt: str) -> None:
    """Raise a ValueError naming the formats when ``fmt`` is not one of :data:`FORMATS`."""
    if fmt not in FORMATS:
        raise ValueError(f"Unknown format {fmt!r}: use one of {', '.join(FORMATS)}.")


def export_labeled(
    out_dir: str | os.PathLike,
    entries: Sequence[LabeledImage],
    classes: Sequence[str],
    fmt: str,
    config: Mapping[str, Any],
) -> tuple[list[Path], Counter]:
    """Write the dataset of labeled images: the final step of every way of labeling.

    Args:
        out_dir: DATASET_DIR.
        entries: The images to export (any order; exported sorted by ``rel``).
        classes: Class names, in category order.
        fmt: ``"coco"``, ``"yolo"`` or ``"voc"``.
        config: The run's :func:`~grounded_sam.labeling.config.labeling_config` (stored in
            the COCO ``info``).

    Returns:
        ``(files written, instances per class)``.
    """
    ordered = sorted(entries, key=lambda e: e.rel)
    instances: Counter = Counter()
    for entry in ordered:
        instances.update(r["label"] for r in entry.records)
    return write_dataset(Path(out_dir), ordered, list(classes), fmt, config), instances


def export_dataset(out_dir: str | os.PathLike, fmt: str = "coco") -> list[Path]:
    """Export (again) the labels saved in ``out_dir``, e.g. in another format.

    Uses the saved per-image results only: no model is needed.

    Args:
        out_dir: DATASET_DIR of an earlier :func:`~grounded_sam.labeling.run.label_folder`
            run.
        fmt: ``"coco"``, ``"yolo"`` or ``"voc"``.

    Returns:
        The annotation files written.

    Raises:
        FileNotFoundError: ``out_dir`` holds no labeling state.
        ValueError: Unknown format.
        grounded_sam.labeling.lock.DatasetBusyError: Another run holds ``out_dir``.
    """
    out = Path(out_dir)
    if not run_file(out).is_file():
        raise FileNotFoundError(f"No labeling run found in {out} (missing {run_file(out)}).")
    check_format(fmt)
    with dataset_lock(out):
        config = read_run_config(out)
        if "video" in config:
            raise ValueError(
                f"{out} holds a dataset of videos: export it with "
                "grounded_sam.labeling.video.export_video_dataset (coco or mot)."
            )
        entries = sorted(saved_results(out), key=lambda e: e.rel)
        return write_dataset(out, entries, config["classes"], fmt, config, copy_images=False)


def write_dataset(
    out: Path,
    entries: Sequence[LabeledImage],
    classes: list[str],
    fmt: str,
    config: Mapping[str, Any],
    copy_images: bool = True,
) -> list[Path]:
    """Write the dataset for ``entries`` (sorted by ``rel``) in ``fmt``.

    Args:
        out: DATASET_DIR.
        entries: The images, sorted by ``rel``.
        classes: Class names, in category order.
        fmt: One of :data:`FORMATS`.
        config: The run's config.
        copy_images: Copy the source images into ``out/images`` (and remove images a
            previous export left); False when they are there already.

    Returns:
        The annotation files and folders written.
    """
    images_dir = out / "images"
    targets = [images_dir / n for n in flat_names([e.rel for e in entries])]
    # before anything is written: every file still has the size its labels were made at
    _check_sizes(out, entries, [e.source for e in entries] if copy_images else targets,
                 copied=copy_images)  # fmt: skip
    if copy_images:
        images_dir.mkdir(parents=True, exist_ok=True)
        for entry, target in zip(entries, targets, strict=True):
            if not _same_file(entry.source, target):
                atomic_copy(entry.source, target)
        prune(images_dir, {t.name for t in targets}, suffixes=None)
    staging = state_dir(out) / f"export-{fmt}.tmp"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    try:
        return _WRITERS[fmt](ExportJob(out, staging, entries, targets, classes, config))
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _check_sizes(
    out: Path, entries: Sequence[LabeledImage], files: Sequence[Path], copied: bool
) -> None:
    """Refuse to export an image whose file no longer has the size its labels were made at.

    An image replaced between labeling and export would otherwise get a COCO entry (and
    YOLO / VOC sizes) that disagree with its masks. Only file headers are read.

    Raises:
        ValueError: Naming the image, both sizes and what to do.
    """
    for entry, file in zip(entries, files, strict=True):
        h, w = image_file_size(file)
        if (h, w) == (entry.height, entry.width):
            continue
        if copied:
            todo = (
                "run the labeling again with the same options: an image that changed is "
                "labeled again"
            )
        else:
            todo = (
                f"put the original {file.name} back in {out / 'images'}, or run the labeling again"
            )
        raise ValueError(
            f"{entry.rel} changed since it was labeled: it is now {w}x{h} px but its labels "
            f"are for {entry.width}x{entry.height} px; nothing was exported. To fix it, {todo}."
        )


def _same_file(src: Path, dst: Path) -> bool:
    if not dst.exists():
        return False
    s, d = src.stat(), dst.stat()
    return s.st_size == d.st_size and int(s.st_mtime) == int(d.st_mtime)
