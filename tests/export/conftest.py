"""Known detections for export tests (and the stand-in engine of tests/labeling)."""

from __future__ import annotations

import numpy as np
import supervision as sv

from grounded_sam.results import make_detections

CLASSES = ["date", "fig", "hazelnut"]


def scene_detections(h: int, w: int, phrases: list[str]) -> sv.Detections:
    """Three instances: a solid box, a ring (mask with a hole) and two blobs (two parts)."""
    masks = np.zeros((3, h, w), dtype=bool)
    masks[0, 5:25, 5:35] = True
    masks[1, h // 2 - 15 : h // 2 + 15, w // 2 - 15 : w // 2 + 15] = True
    masks[1, h // 2 - 5 : h // 2 + 5, w // 2 - 5 : w // 2 + 5] = False
    masks[2, h - 20 : h - 8, 4:16] = True
    masks[2, h - 20 : h - 8, w - 16 : w - 4] = True
    xyxy = []
    for m in masks:
        ys, xs = np.nonzero(m)
        xyxy.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    class_id = np.array([0, 1, 2 % len(phrases)]) % len(phrases)
    return make_detections(
        masks=masks,
        xyxy=np.array(xyxy, dtype=np.float32),
        confidence=np.array([0.9, 0.75, 0.6], dtype=np.float32),
        class_id=class_id,
        phrases=phrases,
        clip_score=np.array([0.31, 0.28, 0.25], dtype=np.float32),
        sam_iou=np.array([0.95, 0.9, 0.85], dtype=np.float32),
    )
