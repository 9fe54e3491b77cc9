"""Default values shown by ``grounded-sam COMMAND --help``, without importing the engine.

``--help`` must answer in well under a second, so the command modules build their parsers
from these plain values instead of importing :mod:`grounded_sam.pipeline` (torch,
transformers, supervision: seconds). The query knobs' defaults are read from
:class:`~grounded_sam.grounding.options.QueryOptions` (torch-free), the one place they are
declared; ``tests/cli/test_defaults.py`` checks that every other value equals the engine's own
default, so the two cannot drift apart.
"""

from __future__ import annotations

from grounded_sam.grounding.options import query_fields

__all__ = [
    "DATASET_FORMATS",
    "DEFAULT_CLIP",
    "DEFAULT_SAM",
    "EVERYTHING",
    "INDEX_PROPOSALS",
    "QUERY",
    "VIDEO_DATASET_FORMATS",
]

#: ``grounded_sam.sam.loading.DEFAULT_SAM``.
DEFAULT_SAM = "facebook/sam-vit-base"
#: ``grounded_sam.clip.loading.DEFAULT_CLIP``.
DEFAULT_CLIP = "ViT-B-16:laion2b_s34b_b88k"

#: ``EverythingSettings()`` fields the ``everything`` command exposes (Meta's defaults).
EVERYTHING: dict[str, int | float] = {
    "points_per_side": 32,
    "points_per_batch": 64,
    "pred_iou_thresh": 0.88,
    "stability_score_thresh": 0.95,
    "box_nms_thresh": 0.7,
    "crop_n_layers": 0,
    "crop_n_points_downscale_factor": 1,
    "min_mask_region_area": 0,
}

#: ``grounded_sam.pipeline.DEFAULT_INDEX_SETTINGS`` fields the index commands expose.
INDEX_PROPOSALS: dict[str, int | float] = {
    "points_per_side": 16,
    "points_per_batch": 64,
    "pred_iou_thresh": 0.88,
    "stability_score_thresh": 0.95,
    "box_nms_thresh": 0.7,
    "crop_n_layers": 0,
}

#: Defaults of ``GroundedSAM.__init__``'s query knobs: those of
#: :class:`~grounded_sam.grounding.options.QueryOptions` (torch-free), plus ``max_regions``.
QUERY: dict[str, int | float | None] = {
    **{f.name: f.default for f in query_fields() if f.name in ("threshold", "top_k", "refine")},
    "max_regions": 100,
}

#: ``grounded_sam.labeling.FORMATS``.
DATASET_FORMATS = ("coco", "yolo", "voc")
#: ``grounded_sam.labeling.video.VIDEO_FORMATS`` (``label`` on videos: COCO-video, MOTChallenge).
VIDEO_DATASET_FORMATS = ("coco", "mot")
