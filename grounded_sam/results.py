"""Building ``supervision.Detections`` results.

Every result of the engine is an ``sv.Detections`` whose ``metadata`` says what it answers
(:func:`detection_metadata`): ``image_size`` (H, W), ``phrases`` (the label names
``class_id`` indexes) and ``model_ids`` (``{"sam": ..., "clip": ...}``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import supervision as sv
import torch

from grounded_sam.utils.masks import masks_to_boxes

if TYPE_CHECKING:
    from grounded_sam.grounding.refine import Refined
    from grounded_sam.sam.predictor import Prediction

__all__ = [
    "DATA_KEYS",
    "detection_metadata",
    "empty_detections",
    "grounded_detections",
    "make_detections",
    "prompt_detections",
    "tight_boxes",
]

DATA_KEYS = ("class_name", "clip_score", "sam_iou")
"""Keys always present in ``Detections.data`` of text-prompted results."""


def detection_metadata(
    image_size: tuple[int, int], phrases: Sequence[str], model_ids: tuple[str, str] = ("", "")
) -> dict[str, Any]:
    """``Detections.metadata`` of a result.

    Args:
        image_size: (H, W) of the image.
        phrases: The label names ``class_id`` indexes.
        model_ids: (sam, clip) names of the models.

    Returns:
        ``{"image_size": (H, W), "phrases": [...], "model_ids": {"sam": ..., "clip": ...}}``.
    """
    sam, clip = model_ids
    return {
        "image_size": (int(image_size[0]), int(image_size[1])),
        "phrases": list(phrases),
        "model_ids": {"sam": sam, "clip": clip},
    }


def make_detections(
    masks: np.ndarray,
    xyxy: np.ndarray,
    confidence: np.ndarray,
    class_id: np.ndarray,
    phrases: Sequence[str],
    clip_score: np.ndarray,
    sam_iou: np.ndarray,
    *,
    metadata: Mapping[str, Any] | None = None,
    **extra: np.ndarray,
) -> sv.Detections:
    """Assemble a validated ``sv.Detections``.

    Args:
        masks: (N, H, W) bool at the original image size.
        xyxy: (N, 4) float32 boxes, xyxy in original pixels (tight around each mask).
        confidence: (N,) float32 calibrated scores in [0, 1].
        class_id: (N,) int, index into ``phrases``.
        phrases: The query's phrases.
        clip_score: (N,) float32 raw CLIP cosine similarity with the label's phrase.
        sam_iou: (N,) float32 SAM predicted IoU of the final mask.
        metadata: ``Detections.metadata`` (see :func:`detection_metadata`); None: empty.
        **extra: More per-detection arrays to put in ``data``.

    Returns:
        Detections with ``data`` holding ``class_name``, ``clip_score``, ``sam_iou`` and
        ``extra``.
    """
    names = np.array([phrases[i] for i in class_id.tolist()], dtype=object)
    data = {
        "class_name": names.astype(str) if len(names) else np.zeros(0, dtype=str),
        "clip_score": clip_score.astype(np.float32),
        "sam_iou": sam_iou.astype(np.float32),
        **extra,
    }
    return sv.Detections(
        xyxy=xyxy.astype(np.float32).reshape(-1, 4),
        mask=masks.astype(bool),
        confidence=confidence.astype(np.float32),
        class_id=class_id.astype(int),
        data=data,
        metadata=dict(metadata or {}),
    )


def empty_detections(
    image_size: tuple[int, int], *, metadata: Mapping[str, Any] | None = None, **extra: np.ndarray
) -> sv.Detections:
    """Detections with no rows, with the same fields as a non-empty result.

    Args:
        image_size: (H, W), so that ``mask`` has shape (0, H, W).
        metadata: As for :func:`make_detections`.
        **extra: More (empty) per-detection arrays to put in ``data``.
    """
    h, w = image_size
    return make_detections(
        masks=np.zeros((0, h, w), dtype=bool),
        xyxy=np.zeros((0, 4), dtype=np.float32),
        confidence=np.zeros(0, dtype=np.float32),
        class_id=np.zeros(0, dtype=int),
        phrases=[],
        clip_score=np.zeros(0, dtype=np.float32),
        sam_iou=np.zeros(0, dtype=np.float32),
        metadata=metadata,
        **extra,
    )


def tight_boxes(masks: torch.Tensor) -> torch.Tensor:
    """(N, 4) float xyxy boxes around (N, H, W) bool masks, x2/y2 exclusive (pixel edges)."""
    boxes = masks_to_boxes(masks).float()
    nonempty = masks.flatten(1).any(1) if masks.numel() else torch.zeros(0, dtype=torch.bool)
    boxes[:, 2:] += nonempty[:, None].float()
    return boxes


def grounded_detections(found: Refined, model_ids: tuple[str, str] = ("", "")) -> sv.Detections:
    """The result of a text / exemplar query from the refiner's masks.

    Args:
        found: From :meth:`grounded_sam.grounding.refine.BoxRefiner.refine`.
        model_ids: (sam, clip) names, for ``metadata``.

    Returns:
        Detections with ``mask`` (N, H, W) bool, ``xyxy`` (tight box of each mask, original
        pixels), ``confidence`` (calibrated score), ``class_id`` (index into the labels) and
        ``data`` with ``class_name``, ``clip_score`` (the grounder's raw score), ``sam_iou``
        and ``proposal_index``.
    """
    masks, chosen = found.masks, found.candidates.selection
    return make_detections(
        masks=masks.cpu().numpy(),
        xyxy=tight_boxes(masks).cpu().numpy(),
        confidence=chosen.score.cpu().numpy(),
        class_id=chosen.phrase.cpu().numpy(),
        phrases=found.candidates.labels,
        clip_score=found.candidates.raw_score.cpu().numpy(),
        sam_iou=found.sam_iou.cpu().numpy(),
        metadata=detection_metadata(masks.shape[1:], found.candidates.labels, model_ids),
        proposal_index=chosen.region.cpu().numpy(),
    )


def prompt_detections(pred: Prediction, model_ids: tuple[str, str] = ("", "")) -> sv.Detections:
    """The result of SAM's geometric prompts (``GroundedSAM.predict``).

    Args:
        pred: SAM's prediction: ``masks`` (B, G, H, W) bool, ``iou_predictions`` (B, G),
            ``low_res_logits`` (B, G, L, L) for B prompts with G granularities each.
        model_ids: (sam, clip) names, for ``metadata``.

    Returns:
        Detections, one per mask, ordered by prompt then granularity: ``confidence`` is SAM's
        predicted IoU; ``data`` has ``class_name`` ("prompt"), ``sam_iou``, ``clip_score``
        (NaN), ``prompt_index``, ``granularity`` and ``low_res_logits`` ((N, L, L) float32).
    """
    masks = pred.masks.reshape(-1, *pred.masks.shape[-2:])
    iou = pred.iou_predictions.reshape(-1)
    logits = pred.low_res_logits.reshape(-1, *pred.low_res_logits.shape[-2:])
    n_gran = pred.iou_predictions.shape[-1]
    return make_detections(
        masks=masks,
        xyxy=tight_boxes(torch.from_numpy(masks)).numpy(),
        confidence=np.clip(iou, 0.0, 1.0),
        class_id=np.zeros(len(iou), dtype=int),
        phrases=["prompt"],
        clip_score=np.full(len(iou), np.nan, dtype=np.float32),
        sam_iou=iou,
        metadata=detection_metadata(masks.shape[1:], ["prompt"], model_ids),
        prompt_index=np.repeat(np.arange(len(iou) // n_gran), n_gran),
        granularity=np.tile(np.arange(n_gran), len(iou) // n_gran),
        low_res_logits=logits.astype(np.float32),
    )
