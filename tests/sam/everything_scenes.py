"""Scenes, settings and models shared by the "segment everything" tests.

``test_everything.py`` (generation, parity with Meta), ``test_proposals.py`` (the proposals'
geometry) and ``test_everything_results.py`` (Detections and records) each build their
module-scoped fixtures from these helpers.
"""

from __future__ import annotations

import copy

import numpy as np

from grounded_sam.sam.everything import EverythingSettings, generate_proposals
from grounded_sam.sam.predictor import SamPredictor
from grounded_sam.sam.proposals import Proposals
from grounded_sam.sam.tiny import structure_tiny_sam

# Settings under which the structured tiny SAM gives several distinct, compact masks.
UNIT = {
    "points_per_side": 8,
    "pred_iou_thresh": 0.0,
    "stability_score_thresh": 0.5,
    "box_nms_thresh": 0.9,
}


def shapes_scene(height: int, width: int, seed: int, n_shapes: int = 8) -> np.ndarray:
    """Flat-coloured rectangles and discs on a flat background, (H, W, 3) uint8 RGB."""
    rng = np.random.default_rng(seed)
    image = np.empty((height, width, 3), np.uint8)
    image[:] = rng.integers(0, 255, 3)
    yy, xx = np.mgrid[:height, :width]
    for i in range(n_shapes):
        colour = rng.integers(0, 255, 3)
        cy, cx = rng.integers(0, height), rng.integers(0, width)
        r = rng.integers(min(height, width) // 10, min(height, width) // 4)
        if i % 2:
            inside = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
        else:
            inside = (abs(yy - cy) < r) & (abs(xx - cx) < r * 0.7)
        image[inside] = colour
    return image


def structured_model(sam_model):
    """A copy of the package's tiny SAM with :func:`structure_tiny_sam` applied (masks that
    follow image content, see ``test_everything.py``)."""
    model = copy.deepcopy(sam_model)
    structure_tiny_sam(model)
    return model.eval()


def structured_predictor(sam_model) -> SamPredictor:
    """Our predictor on :func:`structured_model`."""
    return SamPredictor(structured_model(sam_model))


def proposals_with_crops(predictor: SamPredictor, image: np.ndarray) -> Proposals:
    """Proposals with one crop layer (some come from crops other than crop 0)."""
    return generate_proposals(predictor, image, EverythingSettings(**UNIT, crop_n_layers=1))
