"""SAM's "segment everything" mode, kept at the decoder's low resolution.

A regular grid of point prompts is decoded in batches against the kept image embedding
(and, with crop layers, against embeddings of overlapping crops). Masks are filtered by
predicted IoU, stability score, crop-edge contact and box NMS while they are still the
decoder's (B, 3, L, L) logits; only masks that are returned to a caller are ever brought to
full resolution.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from grounded_sam.sam.predictor import ImageEmbedding, SamPredictor
from grounded_sam.utils.grid import build_all_layer_point_grids, generate_crop_boxes
from grounded_sam.utils.masks import (
    box_area,
    box_nms,
    encode_rle,
    is_box_near_crop_edge,
    masks_to_boxes,
    remove_small_regions,
    stability_score,
    uncrop_boxes,
    uncrop_masks,
    uncrop_points,
    xyxy_to_xywh,
)

__all__ = ["EverythingSettings", "Proposals", "generate_proposals", "proposals_to_records"]

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
        if self.points_per_side < 1:
            raise ValueError(f"points_per_side must be >= 1, got {self.points_per_side}.")
        if self.points_per_batch < 1:
            raise ValueError(f"points_per_batch must be >= 1, got {self.points_per_batch}.")
        if self.crop_n_layers < 0:
            raise ValueError(f"crop_n_layers must be >= 0, got {self.crop_n_layers}.")
        if self.crop_n_points_downscale_factor < 1:
            raise ValueError("crop_n_points_downscale_factor must be >= 1.")
        for name in (
            "pred_iou_thresh",
            "stability_score_thresh",
            "box_nms_thresh",
            "crop_nms_thresh",
        ):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}.")
        if self.min_mask_region_area < 0:
            raise ValueError("min_mask_region_area must be >= 0.")


@dataclass
class Proposals:
    """Class-agnostic region proposals of one image, at the decoder's low resolution.

    All tensors are on the predictor's device; N proposals, K crops (crop 0 = whole image).

    Attributes:
        low_res_logits: (N, L, L) float32 decoder logits, each in the padded input frame of
            its own crop.
        crop_index: (N,) long, the crop each proposal was decoded in.
        crop_boxes: (K, 4) long xyxy crops in original pixels (end exclusive).
        crop_input_sizes: Per crop, the (h, w) of the crop resized into the input frame.
        boxes: (N, 4) float32 xyxy boxes in original pixels (inclusive, from low-res masks).
        predicted_iou: (N,) float32 SAM's predicted IoU.
        stability_score: (N,) float32 stability at the low resolution.
        point_coords: (N, 2) float32 xy of the grid point that produced each mask.
        original_size: (H, W) of the image.
        low_res_size: L, the side of the decoder's output.
    """

    low_res_logits: torch.Tensor
    crop_index: torch.Tensor
    crop_boxes: torch.Tensor
    crop_input_sizes: list[tuple[int, int]]
    boxes: torch.Tensor
    predicted_iou: torch.Tensor
    stability_score: torch.Tensor
    point_coords: torch.Tensor
    original_size: tuple[int, int]
    low_res_size: int
    _target_length: int = field(default=1024, repr=False)

    def __len__(self) -> int:
        return int(self.low_res_logits.shape[0])

    def select(self, index: torch.Tensor) -> Proposals:
        """Proposals at ``index`` ((M,) long or (N,) bool), crops unchanged."""
        return Proposals(
            low_res_logits=self.low_res_logits[index],
            crop_index=self.crop_index[index],
            crop_boxes=self.crop_boxes,
            crop_input_sizes=self.crop_input_sizes,
            boxes=self.boxes[index],
            predicted_iou=self.predicted_iou[index],
            stability_score=self.stability_score[index],
            point_coords=self.point_coords[index],
            original_size=self.original_size,
            low_res_size=self.low_res_size,
            _target_length=self._target_length,
        )

    def frame_size(self, longest_side: int | None = None) -> tuple[int, int]:
        """Size (h, w) of a low-res frame of the whole image with the given longest side.

        Args:
            longest_side: Defaults to L (the decoder's resolution).
        """
        side = longest_side or self.low_res_size
        h, w = self.original_size
        scale = side / max(h, w)
        return max(1, round(h * scale)), max(1, round(w * scale))

    def frame_masks(self, size: tuple[int, int] | None = None) -> torch.Tensor:
        """Masks of all proposals in one low-res frame of the whole image.

        Args:
            size: (h, w) of the frame; defaults to :meth:`frame_size`.

        Returns:
            (N, h, w) bool; pixel (i, j) covers original pixels scaled by (H/h, W/w).
        """
        fh, fw = size or self.frame_size()
        out = torch.zeros(len(self), fh, fw, dtype=torch.bool, device=self.low_res_logits.device)
        if len(self) == 0:
            return out
        H, W = self.original_size
        for k in torch.unique(self.crop_index).tolist():
            sel = torch.nonzero(self.crop_index == k).flatten()
            x0, y0, x1, y1 = self.crop_boxes[k].tolist()
            ih, iw = self.crop_input_sizes[k]
            vh, vw = (
                -(-ih * self.low_res_size // self._target_length),
                -(-iw * self.low_res_size // self._target_length),
            )
            logits = self.low_res_logits[sel, :vh, :vw]
            fx0, fx1 = round(x0 * fw / W), max(round(x1 * fw / W), round(x0 * fw / W) + 1)
            fy0, fy1 = round(y0 * fh / H), max(round(y1 * fh / H), round(y0 * fh / H) + 1)
            resized = F.interpolate(
                logits[:, None], (fy1 - fy0, fx1 - fx0), mode="bilinear", align_corners=False
            )[:, 0]
            out[sel, fy0:fy1, fx0:fx1] = resized > 0
        return out

    def full_masks(self, index: torch.Tensor | None = None) -> torch.Tensor:
        """Masks at the original image size (computed only for the proposals asked for).

        Args:
            index: (M,) long indices; None for all.

        Returns:
            (M, H, W) bool.
        """
        from grounded_sam.sam.transforms import SamTransform

        props = self if index is None else self.select(index)
        H, W = self.original_size
        out = torch.zeros(len(props), H, W, dtype=torch.bool, device=props.low_res_logits.device)
        transform = SamTransform(props._target_length)
        for k in torch.unique(props.crop_index).tolist():
            sel = torch.nonzero(props.crop_index == k).flatten()
            x0, y0, x1, y1 = props.crop_boxes[k].tolist()
            logits = transform.postprocess_masks(
                props.low_res_logits[sel][:, None], props.crop_input_sizes[k], (y1 - y0, x1 - x0)
            )[:, 0]
            out[sel] = uncrop_masks(logits > 0, [x0, y0, x1, y1], H, W)
        return out


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
    ch, cw = embedding.original_size
    vh, vw = transform.low_res_valid_size(embedding.input_size)
    # low-res pixel -> crop pixel scale (x, y)
    sx, sy = cw / (embedding.input_size[1] / 4), ch / (embedding.input_size[0] / 4)
    scale = torch.tensor([sx, sy, sx, sy], device=device)
    H, W = original_size
    kept = []
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
        keep = torch.ones_like(iou, dtype=torch.bool)
        if settings.pred_iou_thresh > 0:
            keep &= iou > settings.pred_iou_thresh
        valid = logits[:, :vh, :vw]
        stab = stability_score(valid, predictor.mask_threshold, settings.stability_score_offset)
        if settings.stability_score_thresh > 0:
            keep &= stab >= settings.stability_score_thresh
        boxes_lr = masks_to_boxes(valid > predictor.mask_threshold).float()
        # inclusive low-res box -> inclusive crop-pixel box
        boxes = boxes_lr * scale
        boxes[:, 2:] = ((boxes_lr[:, 2:] + 1) * scale[2:] - 1).clamp_min(boxes[:, :2])
        boxes[:, 2].clamp_(max=cw - 1)
        boxes[:, 3].clamp_(max=ch - 1)
        keep &= ~is_box_near_crop_edge(boxes, crop_box, [0, 0, W, H])
        keep &= (valid > predictor.mask_threshold).flatten(1).any(1)
        idx = torch.nonzero(keep).flatten()
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
    H, W = int(image.shape[0]), int(image.shape[1])
    device = predictor.device
    grids = build_all_layer_point_grids(
        settings.points_per_side, settings.crop_n_layers, settings.crop_n_points_downscale_factor
    )
    crop_boxes, layer_idxs = generate_crop_boxes(
        (H, W), settings.crop_n_layers, settings.crop_overlap_ratio
    )
    crops = [(b, l) for b, l in zip(crop_boxes, layer_idxs) if b[2] > b[0] and b[3] > b[1]]
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
        low_res_size=predictor.transform.low_res_size,
        _target_length=predictor.transform.target_length,
    )


def proposals_to_records(
    proposals: Proposals,
    output_mode: Literal["binary_mask", "coco_rle"] = "binary_mask",
    min_mask_region_area: int = 0,
    nms_thresh: float = 0.7,
) -> list[dict[str, Any]]:
    """Per-mask records in the format of Meta's ``SamAutomaticMaskGenerator.generate``.

    Masks are brought to full resolution here, for the returned proposals only.

    Args:
        proposals: From :func:`generate_proposals`.
        output_mode: ``"binary_mask"`` (HxW bool arrays) or ``"coco_rle"`` (COCO RLE dicts).
        min_mask_region_area: Remove holes/islands below this area (pixels), then drop
            masks that became duplicates (box NMS at ``nms_thresh``); 0 disables.
        nms_thresh: IoU for that duplicate removal.

    Returns:
        One dict per mask with ``segmentation``, ``area`` (pixels), ``bbox`` (xywh, original
        pixels), ``predicted_iou``, ``stability_score``, ``point_coords`` ([[x, y]]) and
        ``crop_box`` (xywh).
    """
    if output_mode not in ("binary_mask", "coco_rle"):
        raise ValueError(f"output_mode must be 'binary_mask' or 'coco_rle', got {output_mode!r}.")
    if len(proposals) == 0:
        return []
    masks = proposals.full_masks()
    boxes = masks_to_boxes(masks).float()
    if min_mask_region_area > 0:
        np_masks = masks.cpu().numpy()
        scores = []
        for i in range(len(np_masks)):
            m, changed = remove_small_regions(np_masks[i], min_mask_region_area, "holes")
            unchanged = not changed
            m, changed = remove_small_regions(m, min_mask_region_area, "islands")
            unchanged = unchanged and not changed
            np_masks[i] = m
            scores.append(float(unchanged))
        masks = torch.from_numpy(np_masks).to(masks.device)
        boxes = masks_to_boxes(masks).float()
        keep = box_nms(boxes, torch.tensor(scores, device=boxes.device), nms_thresh)
        proposals = proposals.select(keep)
        masks, boxes = masks[keep], boxes[keep]
    bbox = xyxy_to_xywh(boxes).cpu().numpy()
    crop = xyxy_to_xywh(proposals.crop_boxes[proposals.crop_index].float()).cpu().numpy()
    areas = masks.flatten(1).sum(1).cpu().numpy()
    iou = proposals.predicted_iou.cpu().numpy()
    stab = proposals.stability_score.cpu().numpy()
    pts = proposals.point_coords.cpu().numpy()
    segs: list[Any]
    if output_mode == "coco_rle":
        segs = encode_rle(masks.cpu())
    else:
        segs = list(masks.cpu().numpy())
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
