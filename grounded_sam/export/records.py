"""The per-instance JSON schema, its inverse, and per-instance binary PNG masks.

One instance record (all values plain JSON types)::

    {
      "id": 0,                       # row in the result
      "label": "fig",                # phrase (class name)
      "class_id": 1,                 # index of the label in "phrases"
      "confidence": 0.87,            # calibrated CLIP probability (see GroundedSAM)
      "clip_score": 0.27,            # raw CLIP cosine similarity (null when not computed)
      "sam_iou": 0.93,               # SAM's predicted IoU of the final mask
      "box": [x1, y1, x2, y2],       # xyxy, original image pixels, x2/y2 exclusive
      "area": 1234,                  # mask pixels
      "mask": {"size": [H, W], "counts": "..."}   # compressed COCO RLE (pycocotools)
    }

One image document (:func:`detections_to_json`)::

    {"image": "path/or/null", "width": W, "height": H, "prompt": "fig, date",
     "phrases": ["fig", "date"], "models": {"sam": ..., "clip": ...},
     "num_instances": N, "instances": [record, ...]}

``GroundedSAM.everything`` results convert to the records of Meta's automatic mask generator
with :func:`everything_records` (``segmentation``, ``area``, ``bbox`` XYWH, ``predicted_iou``,
``point_coords``, ``stability_score``, ``crop_box`` XYWH; COCO RLE JSON with
``output_mode="coco_rle"``) and back with :func:`everything_to_detections`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import supervision as sv

from grounded_sam.export.files import atomic_write_png, safe_name
from grounded_sam.sam.everything_results import everything_records
from grounded_sam.utils.masks import decode_rle, encode_rle

__all__ = [
    "detections_to_json",
    "detections_to_records",
    "everything_records",
    "everything_to_detections",
    "jsonable",
    "records_to_detections",
    "save_instance_masks",
]


def jsonable(value: Any) -> Any:
    """Convert numpy scalars/arrays (recursively) to plain JSON types; NaN/inf become None."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        f = float(value)
        return f if math.isfinite(f) else None
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def _label(dets: sv.Detections, i: int) -> str:
    names = dets.data.get("class_name") if dets.data else None
    if names is not None and len(names) == len(dets):
        return str(names[i])
    if dets.class_id is not None:
        return str(int(dets.class_id[i]))
    return "object"


def _opt_float(dets: sv.Detections, key: str, i: int) -> float | None:
    values = dets.data.get(key) if dets.data else None
    if values is None or len(values) != len(dets):
        return None
    return jsonable(float(values[i]))


def detections_to_records(
    dets: sv.Detections,
    image_size: tuple[int, int],
    *,
    include_masks: bool = True,
) -> list[dict[str, Any]]:
    """Per-instance JSON records of detections (schema in the module docstring).

    Args:
        dets: Detections of one image: ``xyxy`` (N, 4) float xyxy original pixels, ``mask``
            (N, H, W) bool (optional), ``confidence`` (N,), ``class_id`` (N,) and ``data``
            with ``class_name``, ``clip_score``, ``sam_iou`` (each optional).
        image_size: (H, W) of the image; used for the RLE size and checked against masks.
        include_masks: Put the mask as COCO RLE under ``"mask"`` (None when False or when
            there are no masks).

    Returns:
        One dict per detection, in detection order, all values plain JSON types.

    Raises:
        ValueError: Masks do not match ``image_size``.
    """
    h, w = (int(v) for v in image_size)
    has_masks = dets.mask is not None
    if has_masks and len(dets) and tuple(dets.mask.shape[1:]) != (h, w):
        raise ValueError(f"Masks are {tuple(dets.mask.shape[1:])}, expected (H, W) = {(h, w)}.")
    rles = encode_rle(np.asarray(dets.mask)) if has_masks and include_masks and len(dets) else []
    areas = np.asarray(dets.mask).reshape(len(dets), -1).sum(1) if has_masks and len(dets) else None
    records = []
    for i in range(len(dets)):
        box = [float(v) for v in dets.xyxy[i]]
        area = (
            int(areas[i])
            if areas is not None
            else int(round(max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])))
        )
        confidence = None if dets.confidence is None else jsonable(float(dets.confidence[i]))
        records.append(
            {
                "id": i,
                "label": _label(dets, i),
                "class_id": None if dets.class_id is None else int(dets.class_id[i]),
                "confidence": confidence,
                "clip_score": _opt_float(dets, "clip_score", i),
                "sam_iou": _opt_float(dets, "sam_iou", i),
                "box": box,
                "area": area,
                "mask": rles[i] if rles else None,
            }
        )
    return records


def detections_to_json(
    dets: sv.Detections,
    image_size: tuple[int, int],
    *,
    image_path: str | os.PathLike | None = None,
    prompt: str | Sequence[str] | None = None,
    phrases: Sequence[str] | None = None,
    models: Mapping[str, str] | None = None,
    include_masks: bool = True,
) -> dict[str, Any]:
    """The JSON document of one image's result (schema in the module docstring).

    Args:
        dets: Detections of the image (see :func:`detections_to_records`).
        image_size: (H, W) of the image.
        image_path: Where the image came from (None for in-memory images).
        prompt: The prompt as the user typed it (a list is joined with ", ").
        phrases: The parsed phrases; ``class_id`` of a record indexes this list.
        models: E.g. ``{"sam": "facebook/sam-vit-base", "clip": "ViT-B-16:..."}``.
        include_masks: Include each mask as COCO RLE.

    Returns:
        A dict ready for ``json.dumps(..., allow_nan=False)``.
    """
    h, w = (int(v) for v in image_size)
    if prompt is not None and not isinstance(prompt, str):
        prompt = ", ".join(prompt)
    records = detections_to_records(dets, (h, w), include_masks=include_masks)
    return {
        "image": None if image_path is None else os.fspath(image_path),
        "width": w,
        "height": h,
        "prompt": prompt,
        "phrases": list(phrases) if phrases is not None else None,
        "models": dict(models) if models is not None else None,
        "num_instances": len(records),
        "instances": records,
    }


def records_to_detections(
    records: Sequence[Mapping[str, Any]],
    image_size: tuple[int, int],
    classes: Sequence[str] | None = None,
) -> sv.Detections:
    """Rebuild ``sv.Detections`` from instance records (inverse of :func:`detections_to_records`).

    Args:
        records: Records with ``box``, ``mask`` (COCO RLE or None), ``label``,
            ``confidence``, ``class_id``, ``clip_score``, ``sam_iou``.
        image_size: (H, W), the mask size when a record has no mask.
        classes: When given, ``class_id`` is the index of each record's ``label`` in this
            list (so results of different prompts share one class list).

    Returns:
        Detections with ``xyxy`` (N, 4) float32, ``mask`` (N, H, W) bool (None when no
        record has a mask), ``confidence`` (N,) float32 (NaN where null), ``class_id`` (N,)
        int and ``data`` with ``class_name``, ``clip_score``, ``sam_iou``.

    Raises:
        ValueError: A label is not in ``classes``, or a mask has the wrong size.
    """
    h, w = (int(v) for v in image_size)
    n = len(records)
    if n == 0:
        return sv.Detections(
            xyxy=np.zeros((0, 4), dtype=np.float32),
            mask=np.zeros((0, h, w), dtype=bool),
            confidence=np.zeros(0, dtype=np.float32),
            class_id=np.zeros(0, dtype=int),
            data={
                "class_name": np.zeros(0, dtype=str),
                "clip_score": np.zeros(0, dtype=np.float32),
                "sam_iou": np.zeros(0, dtype=np.float32),
            },
        )
    if classes is not None:
        index = {c: i for i, c in enumerate(classes)}
        missing = [r["label"] for r in records if r["label"] not in index]
        if missing:
            raise ValueError(f"Label {missing[0]!r} is not one of the classes {list(classes)}.")
        class_id = np.array([index[r["label"]] for r in records], dtype=int)
    else:
        class_id = np.array([int(r.get("class_id") or 0) for r in records], dtype=int)

    def _floats(key: str) -> np.ndarray:
        return np.array(
            [np.nan if r.get(key) is None else float(r[key]) for r in records], dtype=np.float32
        )

    masks = None
    if any(r.get("mask") for r in records):
        masks = np.zeros((n, h, w), dtype=bool)
        for i, r in enumerate(records):
            if r.get("mask"):
                m = decode_rle(r["mask"])
                if m.shape != (h, w):
                    raise ValueError(f"Mask of record {i} is {m.shape}, expected {(h, w)}.")
                masks[i] = m
    return sv.Detections(
        xyxy=np.array([r["box"] for r in records], dtype=np.float32).reshape(-1, 4),
        mask=masks,
        confidence=_floats("confidence"),
        class_id=class_id,
        data={
            "class_name": np.array([str(r["label"]) for r in records]),
            "clip_score": _floats("clip_score"),
            "sam_iou": _floats("sam_iou"),
        },
    )


def everything_to_detections(
    records: Sequence[Mapping[str, Any]], image_size: tuple[int, int]
) -> sv.Detections:
    """Detections (no classes) from Meta-style automatic-mask records, e.g. to draw them.

    The inverse of :func:`everything_records` for the boxes and masks (records written by
    ``grounded-sam everything`` or Meta's ``SamAutomaticMaskGenerator``).

    Args:
        records: Records with ``segmentation`` (COCO RLE dict or (H, W) bool array),
            ``bbox`` (xywh, Meta's inclusive convention) and ``predicted_iou``.
        image_size: (H, W) of the image.

    Returns:
        Detections with ``xyxy`` (N, 4) (x2/y2 exclusive), ``mask`` (N, H, W) bool,
        ``confidence`` = predicted IoU, ``class_id`` None and ``data["stability_score"]``.
    """
    h, w = (int(v) for v in image_size)
    n = len(records)
    masks = np.zeros((n, h, w), dtype=bool)
    for i, r in enumerate(records):
        seg = r["segmentation"]
        masks[i] = decode_rle(seg) if isinstance(seg, Mapping) else np.asarray(seg, dtype=bool)
    xywh = np.array([r["bbox"] for r in records], dtype=np.float32).reshape(-1, 4)
    xyxy = xywh.copy()
    xyxy[:, 2:] = xywh[:, :2] + xywh[:, 2:] + (xywh[:, 2:] >= 0)
    return sv.Detections(
        xyxy=xyxy,
        mask=masks,
        confidence=np.array([r["predicted_iou"] for r in records], dtype=np.float32),
        data={
            "stability_score": np.array(
                [r.get("stability_score", np.nan) for r in records], dtype=np.float32
            )
        },
    )


def save_instance_masks(dets: sv.Detections, out_dir: str | os.PathLike, stem: str) -> list[Path]:
    """Write one binary PNG per detection mask.

    Files are named ``{stem}_{i:03d}_{label}.png`` (label made file-name safe), 8-bit
    grayscale, 255 inside the mask and 0 outside, at the image's size. Each file is written
    atomically.

    Args:
        dets: Detections with ``mask`` (N, H, W) bool.
        out_dir: Folder to write into (created if missing).
        stem: File name prefix, usually the image's stem.

    Returns:
        The N paths written, in detection order (empty when there are no detections).

    Raises:
        ValueError: The detections have no masks.
    """
    if len(dets) == 0:
        return []
    if dets.mask is None:
        raise ValueError("These detections have no masks to save.")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(len(dets)):
        path = out / f"{stem}_{i:03d}_{safe_name(_label(dets, i))}.png"
        atomic_write_png(path, np.asarray(dets.mask[i], dtype=np.uint8) * 255)
        paths.append(path)
    return paths
