"""grounded_sam: type a phrase, get instance masks with labels and confidences.

Quick start::

    from grounded_sam import GroundedSAM

    gs = GroundedSAM.from_pretrained()          # SAM ViT-B + CLIP ViT-B-16, CUDA if present
    path = "grounded_sam/app/examples/fruits.jpg"
    dets = gs.segment(path, "date, fig")        # supervision.Detections
    idx = gs.index(path)                        # phrase-independent, reusable
    dets = gs.query(idx, "hazelnut")            # milliseconds to a second

The names below are imported on first use (PEP 562), so that ``import grounded_sam`` and
``grounded-sam --help`` do not pay for torch, transformers and supervision.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from grounded_sam.errors import ModelLoadError

if TYPE_CHECKING:
    from grounded_sam.grounding.index import ImageIndex
    from grounded_sam.inputs import load_image, parse_prompt
    from grounded_sam.pipeline import DEFAULT_CLIP, DEFAULT_SAM, GroundedSAM, RegionScorer
    from grounded_sam.sam.everything import EverythingSettings, Proposals
    from grounded_sam.sam.predictor import ImageEmbedding, Prediction, SamPredictor
    from grounded_sam.video.types import TrackerSettings

#: Public name -> module that defines it (imported lazily by ``__getattr__``).
_LAZY: dict[str, str] = {
    "DEFAULT_CLIP": "grounded_sam.pipeline",
    "DEFAULT_SAM": "grounded_sam.pipeline",
    "EverythingSettings": "grounded_sam.sam.everything",
    "GroundedSAM": "grounded_sam.pipeline",
    "ImageEmbedding": "grounded_sam.sam.predictor",
    "ImageIndex": "grounded_sam.grounding.index",
    "Prediction": "grounded_sam.sam.predictor",
    "Proposals": "grounded_sam.sam.everything",
    "RegionScorer": "grounded_sam.pipeline",
    "SamPredictor": "grounded_sam.sam.predictor",
    "TrackerSettings": "grounded_sam.video.types",
    "load_image": "grounded_sam.inputs",
    "parse_prompt": "grounded_sam.inputs",
}

__all__ = [
    "DEFAULT_CLIP",
    "DEFAULT_SAM",
    "EverythingSettings",
    "GroundedSAM",
    "ImageEmbedding",
    "ImageIndex",
    "ModelLoadError",
    "Prediction",
    "Proposals",
    "RegionScorer",
    "SamPredictor",
    "TrackerSettings",
    "load_image",
    "parse_prompt",
]

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'grounded_sam' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
