"""What the format writers share: supervision datasets in chunks, staged files moved in place."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import supervision as sv

from grounded_sam.export.records import records_to_detections
from grounded_sam.export.single_part import join_parts_of_masks
from grounded_sam.labeling.state import LabeledImage

__all__ = ["CHUNK", "ExportJob", "Writer", "detection_dataset", "move_all", "prune"]

CHUNK = 64
"""Images per ``DetectionDataset`` during export (bounds the masks held in memory)."""


@dataclass(frozen=True)
class ExportJob:
    """One format's export of a dataset: what every writer is given.

    Attributes:
        out: DATASET_DIR.
        staging: An empty folder in the state folder, for files before they move in.
        entries: The images, sorted by ``rel``.
        targets: Each image's file in ``out/images`` (same order).
        classes: Class names, in category order.
        config: The run's config (COCO stores it in ``info``).
    """

    out: Path
    staging: Path
    entries: Sequence[LabeledImage]
    targets: Sequence[Path]
    classes: list[str]
    config: Mapping[str, Any]

    def chunks(self) -> Iterator[tuple[list[LabeledImage], list[Path]]]:
        """``(entries, targets)`` in chunks of :data:`CHUNK` images."""
        for start in range(0, len(self.entries), CHUNK):
            stop = start + CHUNK
            yield list(self.entries[start:stop]), list(self.targets[start:stop])


Writer = Callable[[ExportJob], list[Path]]
"""A format writer (``write_coco``, ``write_yolo``, ``write_voc``): returns the annotation files
and folders written."""


def detection_dataset(
    entries: Sequence[LabeledImage],
    targets: Sequence[Path],
    classes: list[str],
    crowd: bool = False,
    one_part: bool = False,
) -> tuple[sv.DetectionDataset, list[sv.Detections]]:
    """A supervision dataset of ``entries`` whose images are named by ``targets``.

    Args:
        entries: The images.
        targets: Their files in the dataset.
        classes: Class names, in category order.
        crowd: Mark detections ``iscrowd`` (makes supervision's COCO writer take its exact
            RLE path, no polygon fitting).
        one_part: Join a mask in several parts into one piece (polygon formats: one polygon,
            one instance per detection).

    Returns:
        The dataset and each image's detections (masks (N, H, W) bool, boxes xyxy pixels).
    """
    annotations = {}
    dets_list = []
    for entry, target in zip(entries, targets, strict=True):
        dets = records_to_detections(entry.records, (entry.height, entry.width), classes)
        if one_part:
            dets.mask = join_parts_of_masks(dets.mask)
        if crowd:
            dets.data["iscrowd"] = np.ones(len(dets), dtype=int)
        dets_list.append(dets)
        annotations[str(target)] = dets
    ds = sv.DetectionDataset(
        classes=list(classes), images=[str(t) for t in targets], annotations=annotations
    )
    return ds, dets_list


def prune(folder: Path, keep: set[str], suffixes: tuple[str, ...] | None) -> None:
    """Remove files a previous export left in ``folder`` that this export does not have."""
    if not folder.is_dir():
        return
    for path in folder.iterdir():
        if not path.is_file() or path.name in keep:
            continue
        if suffixes is None or path.suffix in suffixes:
            path.unlink()


def move_all(src: Path, dst: Path, suffix: str) -> set[str]:
    """Move every file of ``src`` into ``dst`` (atomic renames); returns the names moved.

    Files with ``suffix`` that ``dst`` held but this export did not write are removed.
    """
    dst.mkdir(parents=True, exist_ok=True)
    moved = set()
    if src.is_dir():
        for path in sorted(src.iterdir()):
            os.replace(path, dst / path.name)
            moved.add(path.name)
    prune(dst, moved, suffixes=(suffix,))
    return moved
