"""The JSON the routes return: the CLI's documents, plus polygons when asked for.

``/v1/segment``, ``/v1/query`` and ``/v1/predict`` return exactly the document
``grounded-sam segment --json`` prints (:func:`grounded_sam.export.records.detections_to_json`:
``width``, ``height``, ``prompt``, ``phrases``, ``models``, ``num_instances`` and
``instances``, each with ``label``, ``confidence``, ``clip_score``, ``sam_iou``, ``box``
xyxy pixels, ``area`` and ``mask`` as COCO RLE), with ``index_id`` added. ``format=polygon``
sets each ``mask`` to null and adds ``polygons``: the mask's outlines, one ``[[x, y], ...]``
list (pixels) per part, as supervision traces them. ``/v1/everything`` returns the document
``grounded-sam everything`` writes (``masks`` as Meta's records).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import supervision as sv

from grounded_sam.export.records import detections_to_json, everything_records, jsonable

__all__ = ["detections_document", "everything_document", "mask_polygons"]


def mask_polygons(mask: np.ndarray) -> list[list[list[float]]]:
    """The outlines of a mask: one ``[[x, y], ...]`` polygon (pixels) per part.

    Args:
        mask: (H, W) bool.
    """
    if not mask.any():
        return []
    return [p.astype(float).tolist() for p in sv.mask_to_polygons(np.asarray(mask, dtype=bool))]


def detections_document(
    dets: sv.Detections,
    image_size: tuple[int, int],
    *,
    index_id: str,
    fmt: str,
    prompt: str | Sequence[str] | None,
    phrases: Sequence[str],
    models: Mapping[str, str],
) -> dict[str, Any]:
    """The CLI's JSON document of a result, with ``index_id`` (and polygons for ``fmt``).

    Args:
        dets: The result (masks (N, H, W) bool at the image size).
        image_size: (H, W).
        index_id: The image's index id.
        fmt: ``"rle"`` or ``"polygon"``.
        prompt: The prompt as sent.
        phrases: The names ``class_id`` indexes.
        models: ``{"sam": ..., "clip": ...}``.
    """
    polygon = fmt == "polygon"
    doc = detections_to_json(
        dets, image_size, prompt=prompt, phrases=phrases, models=models, include_masks=not polygon
    )
    if polygon and dets.mask is not None:
        for record, mask in zip(doc["instances"], dets.mask, strict=True):
            record["polygons"] = mask_polygons(mask)
    return {"index_id": index_id, **doc}


def everything_document(
    dets: sv.Detections,
    image_size: tuple[int, int],
    *,
    index_id: str,
    fmt: str,
    models: Mapping[str, str],
    settings: Mapping[str, Any],
) -> dict[str, Any]:
    """The ``grounded-sam everything`` JSON of automatic masks, with ``index_id``.

    ``masks`` are Meta's records (``segmentation`` COCO RLE, ``area``, ``bbox`` XYWH,
    ``predicted_iou``, ``point_coords``, ``stability_score``, ``crop_box`` XYWH); with
    ``fmt="polygon"`` ``segmentation`` is null and ``polygons`` holds the outlines.
    """
    records = everything_records(dets, output_mode="coco_rle")
    if fmt == "polygon" and dets.mask is not None:
        for record, mask in zip(records, dets.mask, strict=True):
            record["segmentation"] = None
            record["polygons"] = mask_polygons(mask)
    h, w = (int(v) for v in image_size)
    return {
        "index_id": index_id,
        "image": None,
        "width": w,
        "height": h,
        "models": {"sam": models.get("sam")},
        "settings": dict(settings),
        "num_masks": len(records),
        "masks": jsonable(records),
    }
