"""Building ``supervision.Detections`` results."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import supervision as sv

__all__ = ["make_detections", "empty_detections", "DATA_KEYS"]

DATA_KEYS = ("class_name", "clip_score", "sam_iou")
"""Keys always present in ``Detections.data`` of text-prompted results."""


def make_detections(
    masks: np.ndarray,
    xyxy: np.ndarray,
    confidence: np.ndarray,
    class_id: np.ndarray,
    phrases: Sequence[str],
    clip_score: np.ndarray,
    sam_iou: np.ndarray,
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
    )


def empty_detections(image_size: tuple[int, int]) -> sv.Detections:
    """Detections with no rows, with the same fields as a non-empty result.

    Args:
        image_size: (H, W), so that ``mask`` has shape (0, H, W).
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
    )
