"""Mask geometry of the tracker: tight boxes, mask IoU, greedy one-to-one matching."""

from __future__ import annotations

import numpy as np

__all__ = ["mask_iou", "match_detections", "tight_xyxy"]


def tight_xyxy(masks: np.ndarray) -> np.ndarray:
    """(N, H, W) bool -> (N, 4) float32 tight boxes, xyxy pixels, x2/y2 exclusive (0s if empty)."""
    n = len(masks)
    out = np.zeros((n, 4), np.float32)
    for i in range(n):
        rows = np.flatnonzero(masks[i].any(1))
        if rows.size == 0:
            continue
        cols = np.flatnonzero(masks[i].any(0))
        out[i] = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
    return out


def mask_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, H, W) x (K, H, W) bool -> (N, K) float32 mask IoU (0 where both are empty)."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), np.float32)
    fa = a.reshape(len(a), -1).astype(np.float32)
    fb = b.reshape(len(b), -1).astype(np.float32)
    inter = fa @ fb.T
    union = fa.sum(1)[:, None] + fb.sum(1)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1.0), 0.0).astype(np.float32)


def match_detections(iou: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """Greedy one-to-one matching by decreasing IoU.

    Args:
        iou: (N, K) IoU of N detections with K tracks.
        threshold: Smallest IoU that is a match.

    Returns:
        ``(detection, track)`` column pairs, best first; each row and column at most once.
    """
    pairs = []
    if iou.size == 0:
        return pairs
    order = np.argsort(-iou, axis=None, kind="stable")
    used_d, used_t = set(), set()
    for flat in order.tolist():
        d, t = divmod(flat, iou.shape[1])
        if iou[d, t] < threshold or (threshold == 0 and iou[d, t] <= 0):
            break
        if d in used_d or t in used_t:
            continue
        used_d.add(d)
        used_t.add(t)
        pairs.append((d, t))
    return pairs
