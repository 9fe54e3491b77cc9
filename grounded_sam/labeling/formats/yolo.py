"""YOLO segmentation: ``labels/*.txt`` polygons, ``scores/*.txt`` sidecar and ``data.yaml``."""

from __future__ import annotations

from pathlib import Path

from grounded_sam.export.files import atomic_write_text
from grounded_sam.labeling.formats.common import ExportJob, detection_dataset, move_all

__all__ = ["write_yolo"]


def write_yolo(job: ExportJob) -> list[Path]:
    """Write ``labels/``, ``scores/`` and ``data.yaml`` (see ``formats.common.Writer``).

    One label line per detection (a polygon, normalised xy); ``scores/<stem>.txt`` holds the
    confidence of each label line, in the same order. ``config`` is not stored.
    """
    from supervision.dataset.formats.yolo import detections_to_yolo_annotations

    labels, scores = job.staging / "labels", job.staging / "scores"
    labels.mkdir()
    scores.mkdir()
    for chunk, chunk_targets in job.chunks():
        ds, dets_list = detection_dataset(chunk, chunk_targets, job.classes, one_part=True)
        ds.as_yolo(annotations_directory_path=str(labels))
        for entry, target, dets in zip(chunk, chunk_targets, dets_list, strict=True):
            lines: list[str] = []
            for i in range(len(dets)):
                n = len(
                    detections_to_yolo_annotations(
                        dets[i : i + 1],
                        image_shape=(entry.height, entry.width, 3),
                        approximation_percentage=0.0,
                    )
                )
                lines += [f"{float(dets.confidence[i]):.6f}"] * n
            label_file = labels / f"{target.stem}.txt"
            written = label_file.read_text().splitlines() if label_file.exists() else []
            if len(written) != len(lines):
                raise RuntimeError(f"YOLO export of {entry.rel}: label/score lines differ.")
            (scores / f"{target.stem}.txt").write_text("".join(s + "\n" for s in lines))
    move_all(labels, job.out / "labels", ".txt")
    move_all(scores, job.out / "scores", ".txt")
    import yaml

    data = {"nc": len(job.classes), "names": list(job.classes), "train": "images", "val": "images"}
    yaml_path = atomic_write_text(job.out / "data.yaml", yaml.safe_dump(data, sort_keys=False))
    return [job.out / "labels", job.out / "scores", yaml_path]
