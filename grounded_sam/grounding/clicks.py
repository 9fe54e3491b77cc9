"""User clicks as SAM prompts for the regions a query re-prompts; masks that honour them."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from grounded_sam.grounding.boxes import decode_boxes
from grounded_sam.inputs import as_points
from grounded_sam.sam.predictor import ImageEmbedding, SamPredictor

if TYPE_CHECKING:
    from grounded_sam.grounding.options import QueryOptions

__all__ = [
    "clicks_in_boxes",
    "decode_boxes_with_clicks",
    "honours_clicks",
    "keep_clicked_proposals",
    "proposals_honouring_clicks",
    "user_clicks",
]

PAD_LABEL = -1
"""SAM's "not a point" label, used to pad the clicks of a box that has fewer inside it."""


def user_clicks(
    options: QueryOptions, image_size: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """A query's clicks as tensors, or None when it has none.

    Args:
        options: The query's options (``points``, ``point_labels``).
        image_size: (H, W) of the image; a click outside it is refused.

    Returns:
        ``(points (K, 2) float32 xy original pixels, labels (K,) long 1 / 0)`` on the CPU.

    Raises:
        ValueError: A click outside the image.
    """
    if options.points is None:
        return None
    points, labels = as_points(options.points, options.point_labels, image_size)
    return torch.from_numpy(points), torch.from_numpy(labels)


def clicks_in_boxes(
    boxes: torch.Tensor, points: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Give every box the user's clicks that fall inside it (foreground and background).

    Args:
        boxes: (M, 4) xyxy, original pixels.
        points: (K, 2) xy, original pixels.
        labels: (K,) long, 1 foreground / 0 background.

    Returns:
        ``(points (M, K, 2), labels (M, K))``: clicks outside a box get label -1 (SAM's
        padding point, ignored by the decoder).
    """
    pts = points.to(boxes.device, torch.float32)
    lab = labels.to(boxes.device, torch.long)
    x, y = pts[None, :, 0], pts[None, :, 1]
    inside = (
        (x >= boxes[:, None, 0])
        & (x <= boxes[:, None, 2])
        & (y >= boxes[:, None, 1])
        & (y <= boxes[:, None, 3])
    )  # (M, K)
    out_labels = torch.where(
        inside, lab[None].expand_as(inside), torch.full_like(inside, PAD_LABEL, dtype=torch.long)
    )
    return pts[None].expand(boxes.shape[0], -1, -1).contiguous(), out_labels


def decode_boxes_with_clicks(
    predictor: SamPredictor,
    embedding: ImageEmbedding,
    boxes: torch.Tensor,
    points: torch.Tensor,
    labels: torch.Tensor,
    refine: int,
    chunk: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode each box together with the clicks inside it, on a kept embedding.

    Args:
        predictor: The SAM predictor.
        embedding: The image's kept embedding.
        boxes: (M, 4) xyxy, original pixels.
        points: (K, 2) xy clicks, original pixels.
        labels: (K,) 1 foreground / 0 background.
        refine: Extra passes feeding each mask's low-res logits back with the same prompts.
        chunk: Prompts per decoder call.

    Returns:
        ``(low_res_logits (M, L, L), iou (M,))``.
    """
    pts, lab = clicks_in_boxes(boxes, points, labels)
    return decode_boxes(predictor, embedding, boxes, refine, chunk, pts, lab)


def honours_clicks(masks: torch.Tensor, points: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Whether each mask contains a foreground click (if any) and no background click.

    Args:
        masks: (M, h, w) bool masks covering the whole image at some resolution.
        points: (K, 2) xy clicks in pixels of an (H, W) image.
        labels: (K,) 1 foreground / 0 background.

    Note:
        ``points`` must already be scaled to the masks' frame (x * w / W, y * h / H).

    Returns:
        (M,) bool.
    """
    m, h, w = masks.shape
    xs = points[:, 0].floor().long().clamp(0, w - 1).to(masks.device)
    ys = points[:, 1].floor().long().clamp(0, h - 1).to(masks.device)
    hit = masks[:, ys, xs]  # (M, K)
    fg = (labels == 1).to(masks.device)
    ok = torch.ones(m, dtype=torch.bool, device=masks.device)
    if fg.any():
        ok &= hit[:, fg].any(1)
    if (~fg).any():
        ok &= ~hit[:, ~fg].any(1)
    return ok


def proposals_honouring_clicks(
    frame_masks: torch.Tensor,
    points: torch.Tensor,
    labels: torch.Tensor,
    image_size: tuple[int, int],
) -> torch.Tensor:
    """Which proposals' own masks honour the clicks (see :func:`honours_clicks`).

    Args:
        frame_masks: (N, fh, fw) bool proposal masks covering the whole image.
        points: (K, 2) xy clicks, original pixels of the (H, W) image.
        labels: (K,) 1 foreground / 0 background.
        image_size: (H, W).

    Returns:
        (N,) bool.
    """
    fh, fw = frame_masks.shape[-2:]
    h, w = image_size
    in_frame = torch.stack([points[:, 0] * fw / w, points[:, 1] * fh / h], 1)
    return honours_clicks(frame_masks, in_frame, labels)


def keep_clicked_proposals(
    decoded: torch.Tensor,
    proposal_logits: torch.Tensor,
    same_frame: torch.Tensor,
    points: torch.Tensor,
    labels: torch.Tensor,
    valid: tuple[int, int],
    threshold: float = 0.0,
) -> torch.Tensor:
    """Where a re-prompted mask misses its clicks, fall back to the proposal's own mask.

    A region is a candidate only because its proposal honoured the clicks; if SAM's box +
    click decode still misses them, the proposal mask (when it lives in the same input frame,
    i.e. it came from the uncropped image) is the better answer.

    Args:
        decoded: (M, L, L) low-res logits of the re-prompted regions.
        proposal_logits: (M, L, L) low-res logits of the regions' proposals.
        same_frame: (M,) bool, proposals decoded on the whole image (crop 0).
        points: (K, 2) clicks already scaled to the low-res frame.
        labels: (K,) 1 foreground / 0 background.
        valid: (h, w) part of the low-res frame covered by the image.
        threshold: Mask logit threshold.

    Returns:
        (M, L, L) logits.
    """
    vh, vw = valid
    ok = honours_clicks(decoded[:, :vh, :vw] > threshold, points, labels)
    use = ~ok & same_frame.to(ok.device)
    use &= honours_clicks(proposal_logits[:, :vh, :vw] > threshold, points, labels)
    if not use.any():
        return decoded
    return torch.where(use[:, None, None], proposal_logits.to(decoded), decoded)
