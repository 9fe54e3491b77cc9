"""The results of "segment everything": proposals -> ``sv.Detections`` -> Meta's records.

:func:`proposals_to_detections` brings the kept proposals to full resolution (optionally
removing small holes and islands, as Meta's generator) and returns them as ``sv.Detections``,
the result type of the whole engine. :func:`everything_records` converts those detections to
the per-mask dicts of Meta's ``SamAutomaticMaskGenerator.generate`` (segmentation as a bool
array, an uncompressed RLE or a COCO RLE); with ``output_mode="coco_rle"`` they are plain JSON
values, which is what ``grounded-sam everything`` writes.
:func:`grounded_sam.export.records.everything_to_detections` reads such records back.

Box formats: ``Detections.xyxy`` and ``data["crop_box"]`` are xyxy in original pixels with
x2/y2 exclusive (pixel edges), as every result of the engine; Meta's records use XYWH, with
``bbox`` from the mask's inclusive box (w = last column - first column) and ``crop_box`` from
the crop's exclusive box (w = crop width), exactly as Meta computes them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import supervision as sv
import torch

from grounded_sam import limits
from grounded_sam.sam.proposals import Proposals
from grounded_sam.utils.masks import (
    box_nms,
    clean_small_regions,
    encode_rle,
    masks_to_boxes,
    masks_to_uncompressed_rle,
)

__all__ = [
    "EVERYTHING_DATA_KEYS",
    "everything_records",
    "proposals_to_detections",
    "proposals_to_records",
]

#: Keys of ``Detections.data`` of an ``everything()`` result (see
#: :func:`proposals_to_detections`).
EVERYTHING_DATA_KEYS = ("predicted_iou", "stability_score", "point_coords", "crop_box", "area")

OutputMode = Literal["binary_mask", "uncompressed_rle", "coco_rle"]
OUTPUT_MODES = ("binary_mask", "uncompressed_rle", "coco_rle")


def proposals_to_detections(
    proposals: Proposals,
    *,
    min_mask_region_area: int = 0,
    nms_thresh: float = 0.7,
    metadata: Mapping[str, Any] | None = None,
) -> sv.Detections:
    """Full-resolution detections of proposals, one per mask, by decreasing predicted IoU.

    Masks are brought to full resolution here, for the given proposals only.

    Args:
        proposals: From :func:`grounded_sam.sam.everything.generate_proposals`.
        min_mask_region_area: Fill holes and remove islands smaller than this (pixels, 8-
            connectivity, at full resolution), then drop masks that became duplicates (box
            NMS at ``nms_thresh``, preferring masks that needed no change), as Meta's generator
            does; 0 disables.
        nms_thresh: IoU for that duplicate removal (Meta uses
            ``max(box_nms_thresh, crop_nms_thresh)``).
        metadata: More ``Detections.metadata`` (e.g. ``model_ids``); ``image_size`` is set.

    Returns:
        Detections (class-agnostic: ``class_id`` is None) with ``mask`` (N, H, W) bool,
        ``xyxy`` (N, 4) float32 tight boxes of the masks (original pixels, x2/y2 exclusive),
        ``confidence`` (N,) float32 = SAM's predicted IoU clipped to [0, 1] (as ``predict``),
        ``data``: ``predicted_iou`` (N,) float32 (unclipped), ``stability_score`` (N,)
        float32 (counted at the decoder's resolution), ``point_coords`` (N, 2) float32 xy of
        the grid point that produced the mask, ``crop_box`` (N, 4) int64 xyxy of the crop it
        was decoded in (original pixels, x2/y2 exclusive), ``area`` (N,) int64 mask pixels;
        ``metadata``: ``image_size`` (H, W) plus ``metadata``.

    Raises:
        ValueError: Out-of-range ``min_mask_region_area`` / ``nms_thresh``; or the
            full-resolution masks (one byte per pixel) would exceed
            :data:`grounded_sam.limits.MAX_MASK_PIXELS`.
    """
    if min_mask_region_area < 0:
        raise ValueError(f"min_mask_region_area must be >= 0, got {min_mask_region_area}.")
    if not 0.0 <= nms_thresh <= 1.0:
        raise ValueError(f"nms_thresh must be in [0, 1], got {nms_thresh}.")
    H, W = proposals.original_size
    if len(proposals) * H * W > limits.MAX_MASK_PIXELS:
        most = max(limits.MAX_MASK_PIXELS // (H * W), 1)
        raise ValueError(
            f"{len(proposals)} automatic masks of a {W}x{H} image need "
            f"{len(proposals) * H * W:,} full-resolution mask pixels, more than one call's "
            f"budget of {limits.MAX_MASK_PIXELS:,} ({limits.REASONS['mask_pixels']}); at most "
            f"{most} masks fit at this size: use fewer points_per_side or crop_n_layers, "
            "raise pred_iou_thresh / stability_score_thresh, or downscale the image."
        )
    masks = proposals.full_masks()
    if min_mask_region_area > 0 and len(proposals):
        np_masks = masks.cpu().numpy()
        unchanged = np.ones(len(np_masks), dtype=np.float32)
        for i in range(len(np_masks)):
            np_masks[i], changed = clean_small_regions(np_masks[i], min_mask_region_area)
            unchanged[i] = float(not changed)
        masks = torch.from_numpy(np_masks).to(masks.device)
        # Prefer masks that needed no clean-up (score 1 over 0), as Meta does; keep the
        # survivors in their original (predicted-IoU) order.
        keep = box_nms(
            masks_to_boxes(masks), torch.from_numpy(unchanged).to(masks.device), nms_thresh
        )
        keep = torch.sort(keep).values
        proposals = proposals.select(keep)
        masks = masks[keep]
    boxes = masks_to_boxes(masks).float()  # inclusive; empty masks give zeros
    areas = masks.flatten(1).sum(1)
    boxes[:, 2:] += (areas > 0)[:, None].float()  # x2/y2 exclusive
    iou = proposals.predicted_iou.float()
    return sv.Detections(
        xyxy=boxes.cpu().numpy().reshape(-1, 4),
        mask=masks.cpu().numpy(),
        confidence=iou.clamp(0.0, 1.0).cpu().numpy(),
        data={
            "predicted_iou": iou.cpu().numpy(),
            "stability_score": proposals.stability_score.float().cpu().numpy(),
            "point_coords": proposals.point_coords.float().cpu().numpy().reshape(-1, 2),
            "crop_box": proposals.crop_boxes[proposals.crop_index].long().cpu().numpy(),
            "area": areas.long().cpu().numpy(),
        },
        metadata={**(metadata or {}), "image_size": (int(H), int(W))},
    )


def everything_records(
    dets: sv.Detections, output_mode: OutputMode = "binary_mask"
) -> list[dict[str, Any]]:
    """Detections of ``everything()`` as the records of Meta's ``SamAutomaticMaskGenerator``.

    Args:
        dets: From :func:`proposals_to_detections` (``GroundedSAM.everything``): ``mask``,
            ``xyxy`` and the ``data`` keys of :data:`EVERYTHING_DATA_KEYS`, possibly filtered
            or reordered.
        output_mode: ``"binary_mask"`` ((H, W) bool arrays), ``"uncompressed_rle"``
            (``{"size": [H, W], "counts": list[int]}``) or ``"coco_rle"`` (COCO compressed RLE,
            ``counts`` a str; decode with ``pycocotools.mask.decode``). With the RLE modes
            every value is a plain JSON type.

    Returns:
        One dict per detection, in detection order, with ``segmentation``, ``area`` (int
        pixels), ``bbox`` ([x, y, w, h] floats, original pixels, from the mask's inclusive
        xyxy box as Meta computes it), ``predicted_iou``, ``point_coords`` ([[x, y]] original
        pixels), ``stability_score`` and ``crop_box`` ([x, y, w, h] floats of the crop the
        mask was decoded in).

    Raises:
        ValueError: Unknown ``output_mode``, or detections without masks or without the
            ``everything()`` data keys.
    """
    _check_output_mode(output_mode)
    missing = [k for k in EVERYTHING_DATA_KEYS if k not in (dets.data or {})]
    if dets.mask is None or missing:
        what = f"data keys {missing}" if missing else "masks"
        raise ValueError(
            f"These detections have no {what}: everything_records converts the result of "
            "GroundedSAM.everything() (or sam.everything_results.proposals_to_detections)."
        )
    if len(dets) == 0:
        return []
    masks = np.asarray(dets.mask, dtype=bool)
    areas = np.asarray(dets.data["area"]).reshape(-1)
    # Meta's bbox: inclusive xyxy -> xywh (an empty mask has the box [0, 0, 0, 0]).
    inclusive = np.asarray(dets.xyxy, dtype=np.float64).copy()
    inclusive[:, 2:] -= (areas > 0)[:, None]
    bbox = np.concatenate([inclusive[:, :2], inclusive[:, 2:] - inclusive[:, :2]], axis=1)
    crop = np.asarray(dets.data["crop_box"], dtype=np.float64).reshape(-1, 4)
    crop = np.concatenate([crop[:, :2], crop[:, 2:] - crop[:, :2]], axis=1)
    iou = np.asarray(dets.data["predicted_iou"]).tolist()
    stab = np.asarray(dets.data["stability_score"]).tolist()
    pts = np.asarray(dets.data["point_coords"]).reshape(-1, 2).tolist()
    segs: list[Any]
    if output_mode == "coco_rle":
        segs = encode_rle(masks)
    elif output_mode == "uncompressed_rle":
        segs = masks_to_uncompressed_rle(torch.from_numpy(masks))
    else:
        segs = list(masks)
    return [
        {
            "segmentation": segs[i],
            "area": int(areas[i]),
            "bbox": [float(v) for v in bbox[i]],
            "predicted_iou": float(iou[i]),
            "point_coords": [[float(pts[i][0]), float(pts[i][1])]],
            "stability_score": float(stab[i]),
            "crop_box": [float(v) for v in crop[i]],
        }
        for i in range(len(segs))
    ]


def proposals_to_records(
    proposals: Proposals,
    output_mode: OutputMode = "binary_mask",
    min_mask_region_area: int = 0,
    nms_thresh: float = 0.7,
) -> list[dict[str, Any]]:
    """Per-mask records in the format of Meta's ``SamAutomaticMaskGenerator.generate``.

    ``everything_records(proposals_to_detections(...), output_mode)``: see those two for the
    arguments, the records' keys and formats, and the errors raised.
    """
    _check_output_mode(output_mode)  # fail before any mask is upscaled
    dets = proposals_to_detections(
        proposals, min_mask_region_area=min_mask_region_area, nms_thresh=nms_thresh
    )
    return everything_records(dets, output_mode)


def _check_output_mode(output_mode: object) -> None:
    if output_mode not in OUTPUT_MODES:
        raise ValueError(
            "output_mode must be 'binary_mask', 'uncompressed_rle' or 'coco_rle', "
            f"got {output_mode!r}."
        )
