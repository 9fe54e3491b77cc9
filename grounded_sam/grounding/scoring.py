"""Region × phrase similarity and its calibration into comparable scores."""

from __future__ import annotations

import torch

__all__ = ["DEFAULT_BACKGROUND_PHRASES", "similarity", "calibrate"]

DEFAULT_BACKGROUND_PHRASES: tuple[str, ...] = (
    "background",
    "an object",
    "a texture",
    "a part of something",
)
"""Generic phrases every region is also compared with, so that a region that matches none
of the user's phrases gets a low score instead of the least-bad phrase winning."""


def similarity(region_embeddings: torch.Tensor, text_embeddings: torch.Tensor) -> torch.Tensor:
    """Cosine similarity between regions and phrases.

    Args:
        region_embeddings: (N, D) L2-normalised.
        text_embeddings: (P, D) L2-normalised.

    Returns:
        (N, P) float32 cosine similarities in [-1, 1].
    """
    return region_embeddings.float() @ text_embeddings.float().T


def calibrate(cosine: torch.Tensor, n_phrases: int, logit_scale: float) -> torch.Tensor:
    """Turn cosine similarities into probabilities comparable across images and prompts.

    Each region's similarities to the user's phrases and the background phrases are scaled
    by CLIP's learned logit scale (its softmax temperature, 100 for released models) and
    soft-maxed together, exactly as CLIP does zero-shot classification.

    Args:
        cosine: (N, P + B) similarities; the first ``n_phrases`` columns are the user's
            phrases, the rest background phrases.
        n_phrases: P.
        logit_scale: CLIP's logit scale (``model.logit_scale.exp()``).

    Returns:
        (N, P) float32: probability that the region shows each phrase rather than any other
        phrase or background. Rows sum to at most 1.
    """
    probs = torch.softmax(cosine.float() * logit_scale, dim=-1)
    return probs[:, :n_phrases]
