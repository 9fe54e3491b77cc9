"""grounded_sam: type a phrase, get instance masks with labels and confidences.

Quick start::

    from grounded_sam import GroundedSAM

    gs = GroundedSAM.from_pretrained()          # SAM ViT-B + CLIP ViT-B-16, CUDA if present
    dets = gs.segment("street.jpg", "car, person")   # supervision.Detections
    idx = gs.index("street.jpg")                # phrase-independent, reusable
    dets = gs.query(idx, "the red car")         # milliseconds to a second
"""

from grounded_sam.errors import ModelLoadError
from grounded_sam.grounding.index import ImageIndex
from grounded_sam.inputs import load_image, parse_prompt
from grounded_sam.pipeline import DEFAULT_CLIP, DEFAULT_SAM, GroundedSAM, RegionScorer
from grounded_sam.sam.everything import EverythingSettings, Proposals
from grounded_sam.sam.predictor import ImageEmbedding, Prediction, SamPredictor

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
    "load_image",
    "parse_prompt",
]

__version__ = "0.1.0"
