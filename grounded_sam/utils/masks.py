"""Pure, batched mask and box helpers for SAM proposals.

Everything here is torch-first and device-agnostic: functions take tensors on any
device and return tensors on the same device, with no per-mask Python loops that
synchronise with the device. The semantics follow Meta's
``segment_anything.utils.amg`` (our parity reference) unless a docstring says
otherwise.

Box conventions (stated again on every function):

* **xyxy inclusive**: ``[x0, y0, x1, y1]`` where ``x1``/``y1`` is the last pixel
  *inside* the mask. This is what :func:`masks_to_boxes` returns (as Meta's
  ``batched_mask_to_box`` does), and what the generator's NMS runs on.
* **crop boxes**: ``[x0, y0, x1, y1]`` in original-image pixels, end *exclusive*
  (``image[y0:y1, x0:x1]`` is the crop), as built by
  :func:`grounded_sam.utils.grid.generate_crop_boxes`.
* **xywh**: ``[x0, y0, w, h]`` as used in COCO-style records.

RLE conventions: masks are run-length encoded in column-major (Fortran) order,
first run counts zeros (COCO). "Uncompressed" RLEs have ``counts`` as a list of
ints; "compressed" (COCO) RLEs have ``counts`` as a ``str`` as produced by
``pycocotools.mask.encode``; both have ``size == [H, W]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
from pycocotools import mask as coco_mask

__all__ = [
    "BoxLike",
    "batched_mask_iou",
    "box_area",
    "box_nms",
    "decode_rle",
    "encode_rle",
    "is_box_near_crop_edge",
    "mask_nms",
    "masks_to_boxes",
    "masks_to_uncompressed_rle",
    "remove_small_regions",
    "clean_small_regions",
    "rle_area",
    "stability_score",
    "uncrop_boxes",
    "uncrop_masks",
    "uncrop_points",
    "xyxy_to_xywh",
]

BoxLike = Sequence[int] | Sequence[float] | torch.Tensor
"""A box given as four numbers or a tensor whose last dimension is 4."""


def _as_box_tensor(box: BoxLike, like: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Convert a box (``(4,)`` or ``(..., 4)``) to a tensor on ``like``'s device."""
    out = torch.as_tensor(box, device=like.device).to(dtype)
    if out.shape[-1:] != (4,):
        raise ValueError(
            f"a box needs 4 values in its last dimension, got shape {tuple(out.shape)}"
        )
    return out


# --------------------------------------------------------------------------- scores


def stability_score(
    logits: torch.Tensor, mask_threshold: float = 0.0, offset: float = 1.0
) -> torch.Tensor:
    """Stability of masks under shifts of the binarisation threshold.

    The score is the IoU between the masks ``logits > mask_threshold + offset`` and
    ``logits > mask_threshold - offset``; the first is contained in the second, so
    it is a ratio of pixel counts.

    Unlike Meta's ``calculate_stability_score``, which returns NaN (0/0) when the
    looser mask is empty, this returns ``0.0`` for that case. Every other value is
    bit-identical.

    Args:
        logits: ``(..., H, W)`` float mask logits.
        mask_threshold: Logit threshold that defines the mask.
        offset: Threshold shift (``>= 0``).

    Returns:
        ``(...,)`` float32 stability scores in ``[0, 1]``.

    """
    strict = (logits > (mask_threshold + offset)).flatten(-2).sum(-1, dtype=torch.int32)
    loose = (logits > (mask_threshold - offset)).flatten(-2).sum(-1, dtype=torch.int32)
    ratio = strict / loose.clamp_min(1)
    return torch.where(loose > 0, ratio, torch.zeros_like(ratio))


# ---------------------------------------------------------------------------- boxes


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """Tight bounding boxes of binary masks.

    Args:
        masks: ``(..., H, W)`` bool masks (non-bool input is treated as ``!= 0``).

    Returns:
        ``(..., 4)`` int64 boxes, **xyxy inclusive** (``x1``/``y1`` is the last
        mask pixel), on the masks' device. Empty masks give ``[0, 0, 0, 0]``.

    Raises:
        ValueError: If ``masks`` has fewer than 2 dimensions.

    """
    if masks.ndim < 2:
        raise ValueError(f"masks must be (..., H, W), got shape {tuple(masks.shape)}")
    *lead, h, w = masks.shape
    if masks.numel() == 0:
        return torch.zeros(*lead, 4, dtype=torch.long, device=masks.device)
    if masks.dtype != torch.bool:
        masks = masks != 0
    rows = masks.any(dim=-1)  # (..., H)
    cols = masks.any(dim=-2)  # (..., W)
    ys = torch.arange(h, device=masks.device)
    xs = torch.arange(w, device=masks.device)
    top = torch.where(rows, ys, h).amin(dim=-1)
    bottom = torch.where(rows, ys, -1).amax(dim=-1)
    left = torch.where(cols, xs, w).amin(dim=-1)
    right = torch.where(cols, xs, -1).amax(dim=-1)
    boxes = torch.stack([left, top, right, bottom], dim=-1)
    empty = ~rows.any(dim=-1)
    return boxes.masked_fill(empty.unsqueeze(-1), 0)


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """Area of xyxy boxes as ``(x1 - x0) * (y1 - y0)``.

    This is torchvision's ``box_area`` formula (no ``+1``), which is what the
    generator uses to rank crops; for crop boxes (end exclusive) it is the exact
    pixel count.

    Args:
        boxes: ``(..., 4)`` xyxy boxes.

    Returns:
        ``(...,)`` areas, same dtype as ``boxes``.

    """
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def xyxy_to_xywh(boxes: torch.Tensor) -> torch.Tensor:
    """Convert ``[x0, y0, x1, y1]`` boxes to ``[x0, y0, x1 - x0, y1 - y0]``.

    Args:
        boxes: ``(..., 4)`` xyxy boxes (inclusive or exclusive; the difference is
            carried through unchanged, as in Meta's ``box_xyxy_to_xywh``).

    Returns:
        ``(..., 4)`` xywh boxes, same dtype and device.

    """
    return torch.cat([boxes[..., :2], boxes[..., 2:] - boxes[..., :2]], dim=-1)


def box_nms(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    iou_threshold: float,
    categories: torch.Tensor | None = None,
) -> torch.Tensor:
    """Greedy box NMS (torchvision), optionally per category.

    Without ``categories`` this is exactly the call Meta's generator makes
    (``batched_nms`` with one category), so kept indices match it.

    Args:
        boxes: ``(N, 4)`` xyxy boxes (any numeric dtype; compared as float32).
        scores: ``(N,)`` scores; higher is kept first.
        iou_threshold: Boxes with IoU ``>`` this against a kept box are dropped.
        categories: Optional ``(N,)`` int labels; boxes only suppress same-label boxes.

    Returns:
        ``(K,)`` int64 indices of kept boxes, by decreasing score, on ``boxes.device``.

    """
    if categories is None:
        categories = torch.zeros(boxes.shape[0], dtype=torch.long, device=boxes.device)
    from torchvision.ops import batched_nms  # lazy: torchvision.ops imports torch._dynamo

    return batched_nms(boxes.float(), scores, categories, iou_threshold)


def is_box_near_crop_edge(
    boxes: torch.Tensor, crop_box: BoxLike, orig_box: BoxLike, atol: float = 20.0
) -> torch.Tensor:
    """Flag boxes that touch a crop's edge where that edge is not the image edge.

    Args:
        boxes: ``(N, 4)`` xyxy boxes in the crop's frame (e.g. from
            :func:`masks_to_boxes` on crop masks).
        crop_box: Crop box ``[x0, y0, x1, y1]`` in original-image pixels, shape
            ``(4,)`` or broadcastable ``(N, 4)``.
        orig_box: The image box ``[0, 0, W, H]``, shape ``(4,)`` or ``(N, 4)``.
        atol: Distance in pixels that counts as "touching".

    Returns:
        ``(N,)`` bool, True where a box side is within ``atol`` of a crop side and
        not within ``atol`` of the corresponding image side.

    """
    uncropped = uncrop_boxes(boxes, crop_box).float()
    crop = _as_box_tensor(crop_box, boxes, torch.float32)
    orig = _as_box_tensor(orig_box, boxes, torch.float32)
    near_crop = (uncropped - crop).abs() <= atol
    near_image = (uncropped - orig).abs() <= atol
    return (near_crop & ~near_image).any(dim=-1)


def uncrop_boxes(boxes: torch.Tensor, crop_box: BoxLike) -> torch.Tensor:
    """Move xyxy boxes from a crop's frame to the original image's frame.

    Args:
        boxes: ``(..., 4)`` xyxy boxes in crop pixels.
        crop_box: ``[x0, y0, x1, y1]`` crop in original pixels, ``(4,)`` or
            broadcastable against ``boxes`` (e.g. ``(N, 4)`` per-box crops).

    Returns:
        ``(..., 4)`` boxes shifted by ``(x0, y0, x0, y0)``, same dtype as ``boxes``.

    """
    crop = _as_box_tensor(crop_box, boxes, boxes.dtype)
    return boxes + crop[..., [0, 1, 0, 1]]


def uncrop_points(points: torch.Tensor, crop_box: BoxLike) -> torch.Tensor:
    """Move xy points from a crop's frame to the original image's frame.

    Args:
        points: ``(..., 2)`` xy points in crop pixels.
        crop_box: ``[x0, y0, x1, y1]`` crop in original pixels, ``(4,)`` or
            broadcastable (e.g. ``(N, 4)`` per-point crops).

    Returns:
        ``(..., 2)`` points shifted by ``(x0, y0)``, same dtype as ``points``.

    """
    crop = _as_box_tensor(crop_box, points, points.dtype)
    return points + crop[..., :2]


def uncrop_masks(
    masks: torch.Tensor, crop_box: Sequence[int], orig_h: int, orig_w: int
) -> torch.Tensor:
    """Paste crop-frame masks into zero masks of the original image size.

    Args:
        masks: ``(..., h, w)`` masks of the crop, ``(h, w) == (y1 - y0, x1 - x0)``.
        crop_box: ``[x0, y0, x1, y1]`` crop in original pixels (end exclusive).
        orig_h: Original image height ``H``.
        orig_w: Original image width ``W``.

    Returns:
        ``(..., H, W)`` masks, same dtype and device; ``masks`` itself when the crop
        is the whole image.

    Raises:
        ValueError: If the mask size does not match the crop box or the box leaves
            the image.

    """
    x0, y0, x1, y1 = (int(v) for v in crop_box)
    if (x0, y0, x1, y1) == (0, 0, orig_w, orig_h):
        return masks
    if tuple(masks.shape[-2:]) != (y1 - y0, x1 - x0):
        raise ValueError(
            f"masks of size {tuple(masks.shape[-2:])} do not fit crop box {[x0, y0, x1, y1]}"
        )
    if x0 < 0 or y0 < 0 or x1 > orig_w or y1 > orig_h:
        raise ValueError(f"crop box {[x0, y0, x1, y1]} leaves the {orig_h}x{orig_w} image")
    out = masks.new_zeros(*masks.shape[:-2], orig_h, orig_w)
    out[..., y0:y1, x0:x1] = masks
    return out


# ------------------------------------------------------------------ small regions


def remove_small_regions(
    mask: np.ndarray, area_thresh: float, mode: Literal["holes", "islands"]
) -> tuple[np.ndarray, bool]:
    """Fill small holes in, or drop small islands from, one binary mask.

    Connectivity is 8-neighbour (OpenCV ``connectedComponentsWithStats``).
    In ``"holes"`` mode, background components with fewer than ``area_thresh``
    pixels are filled. In ``"islands"`` mode, foreground components with fewer
    than ``area_thresh`` pixels are removed; if all of them are small, the
    largest one is kept. Same semantics as Meta's ``remove_small_regions``.

    Args:
        mask: ``(H, W)`` bool mask.
        area_thresh: Components strictly smaller than this (in pixels) are small.
        mode: ``"holes"`` or ``"islands"``.

    Returns:
        ``(mask, changed)``: the ``(H, W)`` bool result, and whether any small
        component was found (when not, ``mask`` is returned as given).

    Raises:
        ValueError: On an unknown mode or a mask that is not 2-D.

    """
    import cv2

    if mode not in ("holes", "islands"):
        raise ValueError(f"mode must be 'holes' or 'islands', got {mode!r}")
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be (H, W), got shape {mask.shape}")
    if mask.dtype != np.bool_:
        mask = mask != 0
    fill_holes = mode == "holes"
    working = np.logical_not(mask) if fill_holes else mask
    n_labels, labels, stats, _ = cv2.connectedComponentsWithStats(
        working.astype(np.uint8), connectivity=8
    )
    sizes = stats[1:, cv2.CC_STAT_AREA]  # label 0 is the complement of `working`
    small = sizes < area_thresh
    if not small.any():
        return mask, False
    keep = np.zeros(n_labels, dtype=bool)  # label -> output value
    if fill_holes:
        keep[0] = True  # the mask itself
        keep[1:] = small  # plus the small holes
    else:
        keep[1:] = ~small  # the big islands
        if not keep.any():
            keep[int(np.argmax(sizes)) + 1] = True
    return keep[labels], True


# ---------------------------------------------------------------------------- RLE


def masks_to_uncompressed_rle(masks: torch.Tensor) -> list[dict[str, Any]]:
    """Uncompressed COCO RLE of a batch of masks, computed on the masks' device.

    Run boundaries are found in one batched pass and copied to the host once.

    Args:
        masks: ``(N, H, W)`` bool masks (non-bool input is treated as ``!= 0``).

    Returns:
        ``N`` dicts ``{"size": [H, W], "counts": list[int]}``; counts are run
        lengths in column-major order, starting with a (possibly zero) run of 0s.
        Equal to Meta's ``mask_to_rle_pytorch``.

    Raises:
        ValueError: If ``masks`` is not 3-D.

    """
    if masks.ndim != 3:
        raise ValueError(f"masks must be (N, H, W), got shape {tuple(masks.shape)}")
    n, h, w = masks.shape
    if masks.dtype != torch.bool:
        masks = masks != 0
    if n == 0:
        return []
    if h * w == 0:
        return [{"size": [h, w], "counts": [0]} for _ in range(n)]
    flat = masks.transpose(1, 2).reshape(n, h * w)  # column-major pixel order
    changes = (flat[:, 1:] != flat[:, :-1]).nonzero()  # (K, 2), sorted by row
    first = flat[:, 0].cpu().numpy()
    changes = changes.cpu().numpy()
    per_mask = np.bincount(changes[:, 0], minlength=n)
    boundaries = np.split(changes[:, 1] + 1, np.cumsum(per_mask)[:-1])
    out = []
    for i in range(n):
        runs = np.diff(np.concatenate(([0], boundaries[i], [h * w]))).tolist()
        counts = [0, *runs] if first[i] else runs
        out.append({"size": [h, w], "counts": counts})
    return out


def _fortran_uint8(masks: torch.Tensor | np.ndarray) -> np.ndarray:
    """``(N, H, W)`` masks -> ``(H, W, N)`` uint8 column-major array for pycocotools."""
    if isinstance(masks, torch.Tensor):
        # (N, W, H) C-contiguous is (H, W, N) Fortran-contiguous once reversed.
        nwh = (masks.detach() != 0).transpose(-1, -2).to(torch.uint8).contiguous()
        return nwh.cpu().numpy().transpose(2, 1, 0)
    nwh = np.ascontiguousarray(np.swapaxes(np.asarray(masks) != 0, -1, -2), dtype=np.uint8)
    return nwh.transpose(2, 1, 0)


def encode_rle(masks: torch.Tensor | np.ndarray) -> list[dict[str, Any]]:
    """Compressed COCO RLE of one or more masks (via ``pycocotools.mask.encode``).

    Args:
        masks: ``(N, H, W)`` or ``(H, W)`` bool masks, a tensor (any device) or
            an array; non-bool input is treated as ``!= 0``.

    Returns:
        One dict per mask (a single mask gives a one-element list):
        ``{"size": [H, W], "counts": str}``, JSON-serialisable and accepted by
        ``pycocotools.mask.decode`` / ``area`` / ``iou``.

    Raises:
        ValueError: If ``masks`` is not 2-D or 3-D.

    """
    if masks.ndim == 2:
        masks = masks[None]
    if masks.ndim != 3:
        raise ValueError(f"masks must be (N, H, W) or (H, W), got shape {tuple(masks.shape)}")
    if masks.shape[0] == 0:
        return []
    rles = coco_mask.encode(_fortran_uint8(masks))
    return [
        {"size": [int(s) for s in r["size"]], "counts": r["counts"].decode("ascii")} for r in rles
    ]


def _is_uncompressed(rle: dict[str, Any]) -> bool:
    return not isinstance(rle["counts"], str | bytes)


def decode_rle(rle: dict[str, Any]) -> np.ndarray:
    """Decode one RLE, compressed (``counts`` str/bytes) or uncompressed (list).

    Args:
        rle: ``{"size": [H, W], "counts": ...}``.

    Returns:
        ``(H, W)`` bool mask (C-contiguous).

    Raises:
        ValueError: If uncompressed counts do not add up to ``H * W``.

    """
    h, w = (int(v) for v in rle["size"])
    if _is_uncompressed(rle):
        counts = np.asarray(rle["counts"], dtype=np.int64)
        values = np.arange(counts.size) % 2 == 1  # runs alternate 0, 1, 0, ...
        flat = np.repeat(values, counts)
        if flat.size != h * w:
            raise ValueError(f"RLE counts sum to {flat.size}, expected {h}*{w}={h * w}")
        return np.ascontiguousarray(flat.reshape(w, h).T)
    return coco_mask.decode(rle).astype(bool)


def rle_area(rle: dict[str, Any]) -> int:
    """Count the foreground pixels of an RLE (compressed or uncompressed).

    Args:
        rle: ``{"size": [H, W], "counts": ...}``.

    Returns:
        The mask area in pixels.

    """
    if _is_uncompressed(rle):
        return int(sum(rle["counts"][1::2]))
    return int(coco_mask.area(rle))


# ----------------------------------------------------------------------- mask NMS


def batched_mask_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU between two sets of binary masks, via one matrix product.

    Meant for low-resolution masks (e.g. 256x256 or smaller): memory is
    ``(N + M) * h * w`` float32. Pixel counts are exact up to ``2**24`` pixels.

    Args:
        a: ``(N, h, w)`` bool masks.
        b: ``(M, h, w)`` bool masks, same ``(h, w)`` and device.

    Returns:
        ``(N, M)`` float32 IoU; a pair of empty masks has IoU 0.

    Raises:
        ValueError: If the shapes are not ``(N, h, w)`` / ``(M, h, w)``.

    """
    if a.ndim != 3 or b.ndim != 3 or a.shape[-2:] != b.shape[-2:]:
        raise ValueError(
            f"expected (N, h, w) and (M, h, w) masks, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    af = a.flatten(1).to(torch.float32)
    bf = b.flatten(1).to(torch.float32)
    inter = af @ bf.T
    union = af.sum(1)[:, None] + bf.sum(1)[None, :] - inter
    iou = inter / union.clamp_min(1.0)
    return torch.where(union > 0, iou, torch.zeros_like(iou))


def mask_nms(masks: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy NMS on binary masks using mask IoU.

    Masks are visited by decreasing score (stable for ties); a mask is kept unless
    its float32 IoU with an already kept mask is ``> iou_threshold`` (compared in
    float64, the rule of torchvision's CPU ``nms``, so rectangle masks give the
    same result as box NMS on their boxes).
    The IoU matrix is computed once on the device; the greedy pass runs on a
    host-side ``(N, N)`` bool matrix.

    Args:
        masks: ``(N, h, w)`` bool masks (use a low-resolution frame).
        scores: ``(N,)`` scores.
        iou_threshold: Suppression threshold on mask IoU.

    Returns:
        ``(K,)`` int64 indices of kept masks by decreasing score, on ``masks.device``.

    """
    n = masks.shape[0]
    if n == 0:
        return torch.zeros(0, dtype=torch.long, device=masks.device)
    order = torch.argsort(scores.to(masks.device), descending=True, stable=True)
    ordered = masks[order]
    # Compare in float64 like torchvision's CPU ``nms`` (float32 IoU vs double threshold).
    overlaps = (batched_mask_iou(ordered, ordered).double() > iou_threshold).cpu().numpy()
    suppressed = np.zeros(n, dtype=bool)
    kept = np.zeros(n, dtype=bool)
    for i in range(n):
        if suppressed[i]:
            continue
        kept[i] = True
        suppressed |= overlaps[i]
    return order[torch.from_numpy(np.flatnonzero(kept)).to(order.device)]


def clean_small_regions(mask: np.ndarray, area_thresh: float) -> tuple[np.ndarray, bool]:
    """Fill holes, then drop islands, smaller than ``area_thresh`` pixels (Meta's order).

    Args:
        mask: ``(H, W)`` bool mask.
        area_thresh: Area in pixels below which a hole or an island is removed.

    Returns:
        ``(mask, changed)``: the cleaned mask and whether either step changed it.

    """
    mask, holes = remove_small_regions(mask, area_thresh, "holes")
    mask, islands = remove_small_regions(mask, area_thresh, "islands")
    return mask, holes or islands
