"""Every bound on what one request may ask for, in one place.

A request (one API call, one CLI image, one page action) must never crash the process, hold
it for long, or exhaust the machine. Each knob that scales cost is bounded here; the checks
live at the API edge (:mod:`grounded_sam.inputs`, ``EverythingSettings``, the predictor, the
index loader) and their messages quote the bound and the reason given here.

Memory budget of one call (documented in the README, tested under ``RLIMIT_AS``): apart from
the models, a call holds a few copies of the image (at most :data:`MAX_IMAGE_PIXELS` pixels)
and its full-resolution output masks, one byte per pixel (``predict``: at most
:data:`MAX_MASK_PIXELS`, as for ``everything``; ``query``: at most ``max_regions`` masks;
masks are upscaled one at a time, never all at once in float); everything else (proposals,
logits, CLIP crops) is bounded by the knobs below independently of image size, and the grid
masks that pass the filters of one crop by :data:`MAX_PROPOSAL_LOGIT_BYTES`.
"""

from __future__ import annotations

__all__ = [
    "MAX_BOXES_PER_CALL",
    "MAX_CROP_N_LAYERS",
    "MAX_EXEMPLARS",
    "MAX_IMAGE_PIXELS",
    "MAX_IMAGE_SIDE",
    "MAX_MASK_PIXELS",
    "MAX_PHRASES",
    "MAX_PHRASE_CHARS",
    "MAX_POINTS_PER_BATCH",
    "MAX_POINTS_PER_CALL",
    "MAX_POINTS_PER_SIDE",
    "MAX_PROMPT_CHARS",
    "MAX_PROPOSAL_LOGIT_BYTES",
    "MAX_REFINE",
    "MAX_TOP_K",
    "REASONS",
]

#: Phrases in one prompt (each phrase is one CLIP text encode per template).
MAX_PHRASES = 128
#: Characters in one phrase (CLIP reads at most 77 tokens; longer text is cut anyway).
MAX_PHRASE_CHARS = 300
#: Characters in a whole prompt string before it is split.
MAX_PROMPT_CHARS = MAX_PHRASES * (MAX_PHRASE_CHARS + 2)
#: Pixels of one image (width x height): about 8K x 6K.
MAX_IMAGE_PIXELS = 50_000_000
#: Longest image side (extreme panoramas such as 20000 x 200 are still accepted).
MAX_IMAGE_SIDE = 20_000
#: Extra crop layers of "segment everything" (layer i has 4**i crops, each encoded by SAM).
MAX_CROP_N_LAYERS = 3
#: Grid points per image side (points_per_side**2 prompts per crop).
MAX_POINTS_PER_SIDE = 128
#: Point prompts decoded per SAM decoder call (sets the decoder's peak memory).
MAX_POINTS_PER_BATCH = 1024
#: Extra refinement decoder passes per query.
MAX_REFINE = 8
#: Detections per phrase.
MAX_TOP_K = 10_000
#: Box prompts in one ``predict`` call.
MAX_BOXES_PER_CALL = 256
#: Point prompts in one ``predict`` call.
MAX_POINTS_PER_CALL = 1024
#: Exemplar boxes in one query (each is a SAM decode and a CLIP crop).
MAX_EXEMPLARS = 64
#: Full-resolution output mask pixels of one call (masks x H x W; 1 byte each): 1 GiB.
MAX_MASK_PIXELS = 1 << 30
#: Low-resolution logits of the grid masks that pass the filters in one crop, held until the
#: crop's de-duplication (float32, 256 x 256 each for SAM: 8192 masks): 2 GiB.
MAX_PROPOSAL_LOGIT_BYTES = 2 << 30

#: Why each bound exists, quoted in error messages.
REASONS: dict[str, str] = {
    "phrases": "each phrase costs a CLIP text encode; split larger vocabularies into queries",
    "phrase_chars": "CLIP reads at most 77 tokens of a phrase",
    "image_pixels": "larger images would need several GB per request; downscale the image",
    "crop_n_layers": "layer i adds 4**i crops, each a full SAM encoder pass",
    "points_per_side": "the grid has points_per_side**2 prompts per crop",
    "points_per_batch": "it sets the decoder's peak memory",
    "refine": "each pass is a full decoder run per detection",
    "top_k": "a larger limit is the same as no limit (None)",
    "boxes": "each box yields full-resolution masks; split the boxes over several calls",
    "exemplars": "each exemplar is a SAM decode and a CLIP crop; several are averaged anyway",
    "points": "more points than this add nothing to one SAM prompt",
    "mask_pixels": "full-resolution masks of this call would need more than 1 GiB",
    "proposal_logits": "every mask that passes the filters is kept until duplicates are removed",
}
