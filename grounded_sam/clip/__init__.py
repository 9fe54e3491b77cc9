"""CLIP side of grounded_sam: open_clip loading, cached text embeddings, device-side region crops.

Main entry points: :func:`load_clip` -> :class:`ClipScorer` with ``encode_text(phrases)`` and
``encode_regions(image, boxes, masks)``.
"""

from grounded_sam.clip.loading import DEFAULT_CLIP, ClipSpec, load_clip, parse_clip_spec
from grounded_sam.clip.regions import (
    CROP_STYLES,
    CropSettings,
    CropStyle,
    RegionCropper,
    make_region_crop_pil,
    mean_fill_color,
    region_boxes,
)
from grounded_sam.clip.scorer import ClipScorer
from grounded_sam.clip.testing_models import save_tiny_clip
from grounded_sam.clip.text import DEFAULT_TEMPLATES, TextEncoder

__all__ = [
    "CROP_STYLES",
    "DEFAULT_CLIP",
    "DEFAULT_TEMPLATES",
    "ClipScorer",
    "ClipSpec",
    "CropSettings",
    "CropStyle",
    "RegionCropper",
    "TextEncoder",
    "load_clip",
    "make_region_crop_pil",
    "mean_fill_color",
    "parse_clip_spec",
    "region_boxes",
    "save_tiny_clip",
]
