"""SAM's "segment everything" mode, kept at the decoder's low resolution.

A regular grid of point prompts is decoded in batches against the kept image embedding
(and, with crop layers, against embeddings of overlapping crops). Masks are filtered by
predicted IoU, stability score, crop-edge contact and box NMS while they are still the
decoder's (B, 3, L, L) logits; only masks that are returned to a caller are ever brought to
full resolution.

:func:`generate_proposals` returns low-res :class:`~grounded_sam.sam.proposals.Proposals`;
:mod:`grounded_sam.sam.everything_results` turns them into ``sv.Detections``
(:func:`proposals_to_detections`, what ``GroundedSAM.everything`` returns) and those into
Meta's record dicts (:func:`everything_records`).

Differences from Meta's ``SamAutomaticMaskGenerator``, which upsamples every grid mask to the
original image size before filtering (same grid, crops, thresholds, filter order and NMS
otherwise; records have the same keys and formats):

* stability scores are counted on a 2x sub-pixel bilinear grid of the low-res logits (see
  :mod:`grounded_sam.sam.stability`), boxes for the crop-edge filter and NMS come from the
  low-res masks (exact to about one low-res pixel): masks whose stability or box IoU lies
  within ~0.01 of a threshold may be kept on one side and dropped on the other;
* masks that are empty at low resolution are dropped (Meta keeps them when
  ``stability_score_thresh`` is 0, with a NaN stability);
* proposals and records are ordered by decreasing predicted IoU (Meta's order is the NMS
  order, which is the same for one crop).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from grounded_sam import limits
from grounded_sam.sam.everything_results import (
    everything_records,
    proposals_to_detections,
    proposals_to_records,
)
from grounded_sam.sam.predictor import ImageEmbedding, SamPredictor
from grounded_sam.sam.proposals import MaskFrame, Proposals
from grounded_sam.sam.stability import SUBPIXELS, subpixel_stability
from grounded_sam.utils.grid import build_all_layer_point_grids, generate_crop_boxes
from grounded_sam.utils.masks import (
    box_area,
    box_nms,
    is_box_near_crop_edge,
    masks_to_boxes,
    uncrop_boxes,
    uncrop_points,
)

__all__ = [
    "EverythingSettings",
    "MaskFrame",
    "Proposals",
    "everything_records",
    "generate_proposals",
    "proposals_to_detections",
    "proposals_to_records",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EverythingSettings:
    """Knobs of the automatic mask generator (same names and defaults as Meta's).

    Attributes:
        points_per_side: Grid points along each side of the image (layer 0).
        points_per_batch: Point prompts decoded per decoder call.
        pred_iou_thresh: Keep masks whose predicted IoU is above this (0 disables).
        stability_score_thresh: Keep masks whose stability score is at least this.
        stability_score_offset: Logit offset used for the stability score.
        box_nms_thresh: Box IoU above which duplicate masks within a crop are removed.
        crop_n_layers: Extra layers of overlapping image crops (0 = whole image only).
        crop_nms_thresh: Box IoU above which duplicates across crops are removed.
        crop_overlap_ratio: Overlap of first-layer crops as a fraction of the short side.
        crop_n_points_downscale_factor: Points per side are divided by this per layer.
        min_mask_region_area: Holes and islands smaller than this (pixels) are removed from
            returned masks (full resolution, as in Meta's generator); 0 disables.
        max_proposals: Keep at most this many proposals (highest predicted IoU); None keeps all.
    """

    points_per_side: int = 32
    points_per_batch: int = 64
    pred_iou_thresh: float = 0.88
    stability_score_thresh: float = 0.95
    stability_score_offset: float = 1.0
    box_nms_thresh: float = 0.7
    crop_n_layers: int = 0
    crop_nms_thresh: float = 0.7
    crop_overlap_ratio: float = 512 / 1500
    crop_n_points_downscale_factor: int = 1
    min_mask_region_area: int = 0
    max_proposals: int | None = None

    def __post_init__(self) -> None:
        for name in (
            "points_per_side",
            "points_per_batch",
            "crop_n_layers",
            "crop_n_points_downscale_factor",
            "min_mask_region_area",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer):
                raise ValueError(f"{name} must be an integer, got {value!r}.")
        for name, low, high in (
            ("points_per_side", 1, limits.MAX_POINTS_PER_SIDE),
            ("points_per_batch", 1, limits.MAX_POINTS_PER_BATCH),
            ("crop_n_layers", 0, limits.MAX_CROP_N_LAYERS),
            ("crop_n_points_downscale_factor", 1, None),
            ("min_mask_region_area", 0, None),
        ):
            value = getattr(self, name)
            if value < low:
                raise ValueError(f"{name} must be >= {low}, got {value}.")
            if high is not None and value > high:
                raise ValueError(f"{name} must be <= {high}, got {value} ({limits.REASONS[name]}).")
        for name in (
            "pred_iou_thresh",
            "stability_score_thresh",
            "box_nms_thresh",
            "crop_nms_thresh",
        ):
            value = getattr(self, name)
            if not _is_real(value) or not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a number in [0, 1], got {value!r}.")
        offset = self.stability_score_offset
        if not _is_real(offset) or not 0.0 <= offset < float("inf"):
            raise ValueError(
                f"stability_score_offset must be a finite number >= 0, got {offset!r}."
            )
        ratio = self.crop_overlap_ratio
        if not _is_real(ratio) or not 0.0 <= ratio < 1.0:
            raise ValueError(f"crop_overlap_ratio must be a number in [0, 1), got {ratio!r}.")
        mp = self.max_proposals
        if mp is not None and (
            isinstance(mp, bool) or not isinstance(mp, int | np.integer) or mp < 1
        ):
            raise ValueError(f"max_proposals must be None or an integer >= 1, got {mp!r}.")


def _is_real(value: object) -> bool:
    """True for int/float numbers (not bool, not NaN)."""
    return (
        not isinstance(value, bool)
        and isinstance(value, int | float | np.integer | np.floating)
        and value == value
    )


def _empty_batch(device: torch.device, side: int) -> dict[str, torch.Tensor]:
    return {
        "logits": torch.zeros(0, side, side, device=device),
        "iou": torch.zeros(0, device=device),
        "stability": torch.zeros(0, device=device),
        "boxes": torch.zeros(0, 4, device=device),
        "points": torch.zeros(0, 2, device=device),
    }


def _process_crop(
    predictor: SamPredictor,
    embedding: ImageEmbedding,
    points: np.ndarray,
    crop_box: list[int],
    original_size: tuple[int, int],
    settings: EverythingSettings,
    progress: tqdm | None,
) -> dict[str, torch.Tensor]:
    """Decode a crop's grid and filter at low resolution; returns kept masks' data."""
    device = predictor.device
    transform = predictor.transform
    side = transform.low_res_size
    threshold = predictor.mask_threshold
    ch, cw = embedding.original_size
    ih, iw = embedding.input_size
    # One low-res pixel is `stride` input-frame pixels, i.e. (sx, sy) crop pixels.
    stride = transform.target_length / side
    sx, sy = stride * cw / iw, stride * ch / ih
    # Low-res rows/cols covering the image (the rest is padding), the sub-pixel rows/cols that
    # do, and the low-res rows/cols needed to interpolate those (one beyond, if any).
    vh, vw = transform.low_res_valid_size(embedding.input_size)
    f = SUBPIXELS
    valid_sub = (math.ceil(ih * f / stride), math.ceil(iw * f / stride))
    need_h, need_w = min(vh + 1, side), min(vw + 1, side)
    scale = torch.tensor([sx, sy, sx, sy], device=device)
    limit = torch.tensor([cw - 1, ch - 1, cw - 1, ch - 1], dtype=torch.float32, device=device)
    H, W = original_size
    kept = []
    kept_bytes = 0
    for start in range(0, len(points), settings.points_per_batch):
        batch_pts = torch.as_tensor(
            points[start : start + settings.points_per_batch], dtype=torch.float32, device=device
        )
        out = predictor.decode(
            embedding,
            points=batch_pts[:, None, :],
            labels=torch.ones(batch_pts.shape[0], 1, dtype=torch.long, device=device),
            multimask_output=True,
        )
        n_masks = out.low_res_logits.shape[1]
        logits = out.low_res_logits.flatten(0, 1)
        iou = out.iou_scores.flatten()
        pts = batch_pts.repeat_interleave(n_masks, dim=0)
        # Cheapest filter first: the rest is measured only for masks that pass it.
        if settings.pred_iou_thresh > 0:
            idx = torch.nonzero(iou > settings.pred_iou_thresh).flatten()
            logits, iou, pts = logits[idx], iou[idx], pts[idx]
        stab = subpixel_stability(
            logits[:, :need_h, :need_w], valid_sub, threshold, settings.stability_score_offset
        )
        masks = logits[:, :vh, :vw] > threshold
        keep = masks.flatten(1).any(1)
        if settings.stability_score_thresh > 0:
            keep = keep & (stab >= settings.stability_score_thresh)
        # Inclusive low-res box -> inclusive crop-pixel box: the first and last crop pixels
        # whose centres fall in the first / last occupied low-res pixel (a full-resolution
        # mask's box counts pixels by their centres).
        lr_boxes = masks_to_boxes(masks).float()
        boxes = torch.ceil(lr_boxes * scale - 0.5)
        boxes[:, 2:] = torch.ceil((lr_boxes[:, 2:] + 1) * scale[2:] - 0.5) - 1
        boxes[:, 2:] = torch.maximum(boxes[:, 2:], boxes[:, :2])
        boxes = torch.minimum(boxes.clamp_min(0), limit)
        keep = keep & ~is_box_near_crop_edge(boxes, crop_box, [0, 0, W, H])
        idx = torch.nonzero(keep).flatten()
        kept_bytes += idx.numel() * logits.shape[1:].numel() * logits.element_size()
        if kept_bytes > limits.MAX_PROPOSAL_LOGIT_BYTES:
            done = start + len(batch_pts)
            raise ValueError(_too_many_masks(settings, kept_bytes, done, len(points)))
        kept.append(
            {
                "logits": logits[idx],
                "iou": iou[idx],
                "stability": stab[idx],
                "boxes": boxes[idx],
                "points": pts[idx],
            }
        )
        if progress is not None:
            progress.update(int(batch_pts.shape[0]))
    if not kept:
        return _empty_batch(device, side)
    data = {key: torch.cat([k[key] for k in kept]) for key in kept[0]}
    if data["iou"].numel():
        keep = box_nms(data["boxes"], data["iou"], settings.box_nms_thresh)
        data = {key: value[keep] for key, value in data.items()}
    data["boxes"] = uncrop_boxes(data["boxes"], crop_box)
    data["points"] = uncrop_points(data["points"], crop_box)
    return data


def _too_many_masks(settings: EverythingSettings, nbytes: int, done: int, total: int) -> str:
    gib = limits.MAX_PROPOSAL_LOGIT_BYTES / 2**30
    return (
        f"Too many masks pass the filters: after {done} of this crop's {total} grid points "
        f"their low-resolution logits already need {nbytes / 2**30:.2f} GiB before "
        f"de-duplication (the bound is {gib:g} GiB: "
        f"{limits.REASONS['proposal_logits']}). Raise pred_iou_thresh (now "
        f"{settings.pred_iou_thresh:g}) or stability_score_thresh (now "
        f"{settings.stability_score_thresh:g}), or lower points_per_side (now "
        f"{settings.points_per_side})."
    )


@torch.inference_mode()
def generate_proposals(
    predictor: SamPredictor,
    image: np.ndarray,
    settings: EverythingSettings | None = None,
    embedding: ImageEmbedding | None = None,
    show_progress: bool = False,
) -> Proposals:
    """Run SAM's automatic mask generation and keep the result at low resolution.

    Args:
        predictor: The SAM predictor.
        image: (H, W, 3) uint8 RGB.
        settings: Generator knobs; defaults to :class:`EverythingSettings`.
        embedding: The whole image's embedding if already computed (it is reused for crop
            layer 0, so the encoder does not run again).
        show_progress: Show a tqdm bar over the grid points.

    Returns:
        The proposals, sorted by descending predicted IoU.
    """
    settings = settings or EverythingSettings()
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(
            f"image must be an (H, W, 3) uint8 RGB array, got "
            f"{getattr(image, 'shape', type(image).__name__)}."
        )
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8 RGB, got dtype {image.dtype}.")
    H, W = int(image.shape[0]), int(image.shape[1])
    if H < 1 or W < 1:
        raise ValueError(f"image is empty: {H}x{W}.")
    if embedding is not None and tuple(embedding.original_size) != (H, W):
        raise ValueError(
            f"embedding was computed for a {embedding.original_size[0]}x"
            f"{embedding.original_size[1]} image, but the image is {H}x{W}: pass the "
            "embedding of this image (predictor.encode(image)) or None."
        )
    device = predictor.device
    grids = build_all_layer_point_grids(
        settings.points_per_side, settings.crop_n_layers, settings.crop_n_points_downscale_factor
    )
    crop_boxes, layer_idxs = generate_crop_boxes(
        (H, W), settings.crop_n_layers, settings.crop_overlap_ratio
    )
    # Meta's crop layout can contain empty boxes when a side has fewer pixels than crops.
    crops = [
        (box, layer)
        for box, layer in zip(crop_boxes, layer_idxs, strict=True)
        if box[2] > box[0] and box[3] > box[1]
    ]
    total = sum(len(grids[layer]) for _, layer in crops)
    progress = tqdm(total=total, desc="proposals", unit="pt", disable=not show_progress)
    parts: list[dict[str, torch.Tensor]] = []
    input_sizes: list[tuple[int, int]] = []
    for k, (box, layer) in enumerate(crops):
        x0, y0, x1, y1 = box
        if k == 0 and embedding is not None:
            emb = embedding
        else:
            emb = predictor.encode(np.ascontiguousarray(image[y0:y1, x0:x1]))
        pts = grids[layer] * np.array([[x1 - x0, y1 - y0]], dtype=np.float64)
        data = _process_crop(predictor, emb, pts, box, (H, W), settings, progress)
        data["crop"] = torch.full((data["iou"].shape[0],), k, dtype=torch.long, device=device)
        parts.append(data)
        input_sizes.append(emb.input_size)
    progress.close()
    data = {key: torch.cat([p[key] for p in parts]) for key in parts[0]}
    crop_t = torch.tensor([b for b, _ in crops], dtype=torch.long, device=device)
    if len(crops) > 1 and data["iou"].numel():
        scores = 1.0 / box_area(crop_t[data["crop"]].float())
        keep = box_nms(data["boxes"], scores, settings.crop_nms_thresh)
        data = {key: value[keep] for key, value in data.items()}
    order = torch.argsort(data["iou"], descending=True, stable=True)
    if settings.max_proposals is not None:
        order = order[: settings.max_proposals]
    data = {key: value[order] for key, value in data.items()}
    logger.debug("%d proposals from %d grid points over %d crops", len(order), total, len(crops))
    return Proposals(
        low_res_logits=data["logits"],
        crop_index=data["crop"],
        crop_boxes=crop_t,
        crop_input_sizes=input_sizes,
        boxes=data["boxes"],
        predicted_iou=data["iou"],
        stability_score=data["stability"],
        point_coords=data["points"],
        original_size=(H, W),
        frame=MaskFrame.of(predictor.transform),
    )
