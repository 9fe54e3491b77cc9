"""Building ``supervision.Detections`` results.

Every result of the engine is an ``sv.Detections``, built here only. Besides the per-detection
fields (``xyxy``, ``mask``, ``confidence``, ``class_id`` and ``data``, see
:meth:`grounded_sam.GroundedSAM.query` and :meth:`~grounded_sam.GroundedSAM.predict`), its
``metadata`` says what the result answers (:func:`detection_metadata`), for example::

    {
        "image_size": (480, 640),          # (H, W) of the original image, as ImageIndex.size
        "width": 640, "height": 480,       # the same, by name
        "phrases": ["dog", "frisbee"],     # the names class_id indexes
        "model_ids": {"sam": "facebook/sam-vit-base", "sam_family": "sam",
                      "clip": "ViT-B-16:laion2b_s34b_b88k"},
    }

``metadata`` is extra information: the JSON and dataset files written from a result
(:mod:`grounded_sam.export.records`) do not change with it. ``tracker_id`` is always None:
results are per image, nothing tracks objects across frames yet.

Thread safety: pure functions of their arguments.
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
    "model_metadata",
    "prompt_detections",
    "sam_family",
    "tight_boxes",
]

DATA_KEYS = ("class_name", "clip_score", "sam_iou")
"""Keys always present in ``Detections.data`` of text-prompted results."""


def sam_family(predictor: object) -> str:
    """The SAM family of a predictor: ``"sam"``, ``"sam_hq"``, ``"sam2"`` ("" if unknown).

    The predictor's own ``family`` (a name, or a record with a ``name``) when it has one, else
    its model config's ``model_type``.
    """
    family = getattr(predictor, "family", None)
    if family is not None:
        return str(getattr(family, "name", family))
    config = getattr(getattr(predictor, "model", None), "config", None)
    model_type = str(getattr(config, "model_type", "") or "")
    return "sam2" if model_type == "sam2_video" else model_type


def model_metadata(predictor: object, model_ids: tuple[str, str] = ("", "")) -> dict[str, str]:
    """The ``model_ids`` entry of ``metadata``: which models made a result.

    Args:
        predictor: The SAM predictor (for its family).
        model_ids: (sam, clip) names as given to ``GroundedSAM.from_pretrained``.

    Returns:
        ``{"sam": ..., "sam_family": ..., "clip": ...}``.
    """
    sam, clip = model_ids
    return {"sam": str(sam), "sam_family": sam_family(predictor), "clip": str(clip)}


def detection_metadata(
    image_size: tuple[int, int],
    phrases: Sequence[str],
    models: Mapping[str, str] | tuple[str, str] | None = None,
) -> dict[str, Any]:
    """``Detections.metadata`` of a result (see the module docstring).

    Args:
        image_size: (H, W) of the original image (as ``ImageIndex.size``).
        phrases: The label names ``class_id`` indexes.
        models: From :func:`model_metadata`; a plain (sam, clip) pair leaves the family
            unknown (""); None: all unknown.

    Returns:
        ``{"image_size": (H, W), "width": W, "height": H, "phrases": [...],
        "model_ids": {"sam": ..., "sam_family": ..., "clip": ...}}``.
    """
    h, w = (int(v) for v in image_size)
    if models is None or isinstance(models, tuple):
        models = model_metadata(None, models or ("", ""))
    return {
        "image_size": (h, w),
        "width": w,
        "height": h,
        "phrases": [str(p) for p in phrases],
        "model_ids": dict(models),
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


def grounded_detections(found: Refined, models: Mapping[str, str] | None = None) -> sv.Detections:
    """The result of a text / exemplar query from the refiner's masks.

    Args:
        found: From :meth:`grounded_sam.grounding.refine.BoxRefiner.refine`.
        models: From :func:`model_metadata`, for ``metadata``.

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
        metadata=detection_metadata(masks.shape[1:], found.candidates.labels, models),
        proposal_index=chosen.region.cpu().numpy(),
    )


def prompt_detections(pred: Prediction, models: Mapping[str, str] | None = None) -> sv.Detections:
    """The result of SAM's geometric prompts (``GroundedSAM.predict``).

    Args:
        pred: SAM's prediction: ``masks`` (B, G, H, W) bool, ``iou_predictions`` (B, G),
            ``low_res_logits`` (B, G, L, L) for B prompts with G granularities each.
        models: From :func:`model_metadata`, for ``metadata``.

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
        metadata=detection_metadata(masks.shape[1:], ["prompt"], models),
        prompt_index=np.repeat(np.arange(len(iou) // n_gran), n_gran),
        granularity=np.tile(np.arange(n_gran), len(iou) // n_gran),
        low_res_logits=logits.astype(np.float32),
    )
