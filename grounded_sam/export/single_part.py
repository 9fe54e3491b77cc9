"""One object, one polygon: join the separate parts of a mask before a polygon export.

YOLO-seg and Pascal VOC store an instance as one polygon. supervision writes one polygon
(one YOLO line, one VOC object) per connected part of a mask, so a mask in three pieces
became three instances. YOLO-seg tools solve this for COCO's multi-polygon instances by
joining the parts with zero-width seams into one polygon (Ultralytics'
``merge_multi_segment``). The same is done here on the mask itself, before supervision
fits the polygon: the parts are linked by 1-pixel lines along the shortest links between
them (a minimum spanning tree over the parts), which makes the mask one 8-connected piece,
so exactly one polygon is written whose outline runs out along each link and back.

Each link adds at most its length in pixels to the mask (1 px wide); holes are still
handled by supervision (joined to the outline by seams). COCO exports keep the exact RLE
mask and are not affected.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["join_mask_parts", "join_parts_of_masks"]

#: Outline points used per part when looking for the shortest links (evenly subsampled).
_POINTS_PER_PART = 64


def _outline(labels: np.ndarray, k: int, box: tuple[int, int, int, int]) -> np.ndarray:
    """(M, 2) x, y outline pixels of part ``k`` (subsampled to at most _POINTS_PER_PART)."""
    x, y, w, h = box
    part = (labels[y : y + h, x : x + w] == k).astype(np.uint8)
    contours, _ = cv2.findContours(part, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    points = np.concatenate([c.reshape(-1, 2) for c in contours]) + np.array([x, y])
    if len(points) > _POINTS_PER_PART:
        points = points[np.linspace(0, len(points) - 1, _POINTS_PER_PART).astype(int)]
    return points


def join_mask_parts(mask: np.ndarray) -> np.ndarray:
    """The mask with its separate parts joined by 1-pixel lines into one 8-connected piece.

    Args:
        mask: (H, W) bool mask.

    Returns:
        (H, W) bool: ``mask`` itself when it has at most one part, else a copy with the
        parts linked along the shortest links between them (a minimum spanning tree).
    """
    binary = np.ascontiguousarray(mask, dtype=np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    parts = count - 1  # label 0 is the background
    if parts <= 1:
        return mask
    outlines = [
        _outline(labels, k, tuple(int(v) for v in stats[k, :4])) for k in range(1, count)
    ]
    # Closest pair of outline points for every pair of parts.
    dist = np.full((parts, parts), np.inf)
    ends: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
    for i in range(parts):
        for j in range(i + 1, parts):
            d = ((outlines[i][:, None, :] - outlines[j][None, :, :]) ** 2).sum(-1)
            a, b = np.unravel_index(int(d.argmin()), d.shape)
            dist[i, j] = dist[j, i] = d[a, b]
            ends[(i, j)] = (outlines[i][a], outlines[j][b])
    # Prim's minimum spanning tree over the parts.
    joined = binary.copy()
    in_tree = np.zeros(parts, dtype=bool)
    in_tree[0] = True
    best = dist[0].copy()
    parent = np.zeros(parts, dtype=int)
    for _ in range(parts - 1):
        candidates = np.where(in_tree, np.inf, best)
        j = int(candidates.argmin())
        i = int(parent[j])
        p, q = ends[(i, j)] if i < j else ends[(j, i)][::-1]
        cv2.line(joined, (int(p[0]), int(p[1])), (int(q[0]), int(q[1])), 1, 1, cv2.LINE_8)
        in_tree[j] = True
        closer = dist[j] < best
        best[closer] = dist[j][closer]
        parent[closer] = j
    return joined.astype(bool)


def join_parts_of_masks(masks: np.ndarray | None) -> np.ndarray | None:
    """:func:`join_mask_parts` for each of (N, H, W) masks (None stays None)."""
    if masks is None:
        return None
    return np.stack([join_mask_parts(m) for m in masks]) if len(masks) else masks
