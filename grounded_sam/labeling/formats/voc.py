"""Pascal VOC: one ``annotations/<stem>.xml`` per image."""

from __future__ import annotations

from pathlib import Path

from grounded_sam.labeling.formats.common import ExportJob, detection_dataset, move_all

__all__ = ["write_voc"]


def write_voc(job: ExportJob) -> list[Path]:
    """Write ``annotations/*.xml`` (see ``formats.common.Writer``); ``config`` is not stored."""
    xml_dir = job.staging / "annotations"
    for chunk, chunk_targets in job.chunks():
        ds, _ = detection_dataset(chunk, chunk_targets, job.classes, one_part=True)
        ds.as_pascal_voc(annotations_directory_path=str(xml_dir))
    move_all(xml_dir, job.out / "annotations", ".xml")
    return [job.out / "annotations"]
