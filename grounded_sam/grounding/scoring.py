"""Region × phrase similarity and its calibration into comparable scores."""

from __future__ import annotations

import torch

from grounded_sam.grounding.options import CALIBRATIONS  # declared with the knob, torch-free

__all__ = [
    "CALIBRATIONS",
    "DEFAULT_BACKGROUND_PHRASES",
    "best_is_negative",
    "calibrate",
    "check_calibration",
    "negative_scores",
    "score_phrases",
    "similarity",
]

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




def score_phrases(
    cosine: torch.Tensor,
    n_phrases: int,
    logit_scale: float,
    mode: str = "joint",
) -> torch.Tensor:
    """Calibrated scores of the user's phrases.

    Columns of ``cosine`` are ordered: the ``P`` user phrases, then the competitors every
    phrase must beat (the negative phrases, then the background phrases).

    - ``"joint"``: one softmax at CLIP's temperature over all columns (CLIP zero-shot
      classification, :func:`calibrate`). A phrase's score is the probability that the
      region shows it rather than any other phrase, negative or background, so it drops
      when a similar phrase is added to the query.
    - ``"per_phrase"``: each phrase gets its own softmax against the competitors only
      (negatives and background), so its score does not depend on the other user phrases;
      a region's scores no longer sum to at most 1.

    Args:
        cosine: (N, P + C) cosine similarities.
        n_phrases: P.
        logit_scale: CLIP's logit scale (its softmax temperature).
        mode: ``"joint"`` or ``"per_phrase"``.

    Returns:
        (N, P) float32 probabilities.

    Raises:
        ValueError: Unknown ``mode``.
    """
    check_calibration(mode)
    if mode == "joint":
        return calibrate(cosine, n_phrases, logit_scale)
    logits = cosine.float() * logit_scale
    rest = torch.logsumexp(logits[:, n_phrases:], dim=-1, keepdim=True)  # (N, 1)
    return torch.sigmoid(logits[:, :n_phrases] - rest)  # e^x / (e^x + sum of e^competitor)


def check_calibration(mode: str) -> None:
    """Raise a ValueError naming the choices when ``mode`` is not a calibration mode."""
    if mode not in CALIBRATIONS:
        raise ValueError(
            f"calibration must be one of {', '.join(map(repr, CALIBRATIONS))}, got {mode!r}."
        )


def negative_scores(
    cosine: torch.Tensor, n_phrases: int, n_negatives: int, logit_scale: float
) -> torch.Tensor:
    """Probability that a region shows one of the negative phrases rather than background.

    Args:
        cosine: (N, P + Q + B) as for :func:`score_phrases`.
        n_phrases: P.
        n_negatives: Q.
        logit_scale: CLIP's logit scale.

    Returns:
        (N, Q) float32: each negative against the negatives and the background phrases.
    """
    logits = cosine[:, n_phrases:].float() * logit_scale
    return torch.softmax(logits, dim=-1)[:, :n_negatives]


def best_is_negative(cosine: torch.Tensor, n_phrases: int, n_negatives: int) -> torch.Tensor:
    """Regions whose best match among the user's and the negative phrases is a negative.

    Decided on cosine similarity, so it is the same under every calibration mode (both are
    increasing in a column's similarity).

    Args:
        cosine: (N, P + Q + B) as for :func:`score_phrases`.
        n_phrases: P (may be 0).
        n_negatives: Q.

    Returns:
        (N,) bool; all False when Q is 0. With P = 0, True everywhere (use
        :func:`negative_scores` to compare negatives with exemplars instead).
    """
    n = cosine.shape[0]
    if n_negatives == 0:
        return torch.zeros(n, dtype=torch.bool, device=cosine.device)
    neg = cosine[:, n_phrases : n_phrases + n_negatives].max(dim=1).values
    if n_phrases == 0:
        return torch.ones(n, dtype=torch.bool, device=cosine.device)
    return neg >= cosine[:, :n_phrases].max(dim=1).values
