"""COCO: ``annotations.json`` with exact RLE masks (iscrowd 0) and the scores of each instance."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from grounded_sam.export.files import atomic_write_json
from grounded_sam.labeling.formats.common import ExportJob, detection_dataset

__all__ = ["write_coco"]


def write_coco(job: ExportJob) -> list[Path]:
    """Write ``out/annotations.json`` (a :data:`~grounded_sam.labeling.formats.common.Writer`).

    supervision's ``as_coco`` writes the images, categories and ids chunk by chunk; each
    annotation's segmentation is then the saved RLE itself, with ``area``, ``iscrowd`` 0,
    ``score`` (the confidence), ``clip_score`` and ``sam_iou``; each image's ``height`` and
    ``width`` are those its labels were made at; ``info.grounded_sam`` holds the run's config.
    """
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    categories: list[dict[str, Any]] = []
    licenses: list[dict[str, Any]] = []
    next_image, next_ann = 1, 1
    for i, (chunk, chunk_targets) in enumerate(job.chunks()):
        ds, _ = detection_dataset(chunk, chunk_targets, job.classes, crowd=True)
        part = job.staging / f"part{i}.json"
        next_image, next_ann = ds.as_coco(
            annotations_path=str(part),
            starting_image_id=next_image,
            starting_annotation_id=next_ann,
        )
        doc = json.loads(part.read_text(encoding="utf-8"))
        records = [r for e in chunk for r in e.records]
        if len(records) != len(doc["annotations"]):
            raise RuntimeError("COCO export wrote a different number of annotations.")
        for ann, rec in zip(doc["annotations"], records, strict=True):
            ann["segmentation"] = rec["mask"]
            ann["area"] = rec["area"]
            ann["iscrowd"] = 0
            ann["score"] = rec["confidence"]
            ann["clip_score"] = rec["clip_score"]
            ann["sam_iou"] = rec["sam_iou"]
        for image, entry in zip(doc["images"], chunk, strict=True):
            # the size the masks were made at (supervision reads the file header, which
            # ignores EXIF rotation; write_dataset checked the file still has this size)
            image["height"], image["width"] = entry.height, entry.width
        images.extend(doc["images"])
        annotations.extend(doc["annotations"])
        categories, licenses = doc["categories"], doc["licenses"]
    if not categories:
        categories = [
            {"id": k + 1, "name": c, "supercategory": "common-objects"}
            for k, c in enumerate(job.classes)
        ]
    result = {
        "info": {
            "description": "Labeled by grounded_sam (text-prompted "
            + ("SAM + CLIP)" if job.config.get("clip", "?") else "SAM 3)"),
            "grounded_sam": dict(job.config),
        },
        "licenses": licenses,
        "categories": categories,
        "images": images,
        "annotations": annotations,
    }
    return [atomic_write_json(job.out / "annotations.json", result)]
