"""Pascal VOC: one ``annotations/<stem>.xml`` per image."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from grounded_sam.labeling.formats.common import chunks, detection_dataset, move_all
from grounded_sam.labeling.state import LabeledImage

__all__ = ["write_voc"]


def write_voc(
    out: Path,
    staging: Path,
    entries: Sequence[LabeledImage],
    targets: Sequence[Path],
    classes: list[str],
    config: Mapping[str, Any],
) -> list[Path]:
    """Write ``annotations/*.xml`` (see ``formats.common.Writer``); ``config`` is not stored."""
    xml_dir = staging / "annotations"
    for chunk, chunk_targets in chunks(entries, targets):
        ds, _ = detection_dataset(chunk, chunk_targets, classes, one_part=True)
        ds.as_pascal_voc(annotations_directory_path=str(xml_dir))
    move_all(xml_dir, out / "annotations", ".xml")
    return [out / "annotations"]
