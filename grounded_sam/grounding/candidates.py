"""Scores of every region for a query's phrases and exemplars, and which regions to reject."""

from __future__ import annotations

import torch

from grounded_sam.grounding.scoring import best_is_negative, negative_scores, score_phrases

__all__ = ["score_candidates"]


def score_candidates(
    cosine: torch.Tensor,
    n_phrases: int,
    n_negatives: int,
    logit_scale: float,
    calibration: str,
    exemplar_score: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Calibrated scores per label, and the regions a negative phrase vetoes.

    Labels are the ``P`` user phrases, then (when given) one exemplar label.

    A region is rejected when its best match is a negative phrase: for a region whose best
    label is a phrase, when a negative phrase is at least as similar to it as its best phrase
    (:func:`best_is_negative`); for a region whose best label is the exemplar, when a
    negative's probability against the background phrases is at least the exemplar score.

    Args:
        cosine: (N, P + Q + B) similarities to the phrases, negatives and background phrases.
        n_phrases: P (0 only for an exemplar-only query: give ``exemplar_score``).
        n_negatives: Q.
        logit_scale: CLIP's logit scale.
        calibration: ``"joint"`` or ``"per_phrase"`` (see
            :func:`grounded_sam.grounding.scoring.score_phrases`).
        exemplar_score: Optional (N,) calibrated exemplar scores.

    Returns:
        ``(scores (N, P [+ 1]), rejected (N,) bool)``.
    """
    scores = score_phrases(cosine, n_phrases, logit_scale, calibration)
    rejected = best_is_negative(cosine, n_phrases, n_negatives)
    if exemplar_score is None:
        return scores, rejected
    scores = torch.cat([scores, exemplar_score[:, None].to(scores)], dim=1)
    if n_negatives:
        # where the exemplar is the best label (always, for an exemplar-only query)
        neg = negative_scores(cosine, n_phrases, n_negatives, logit_scale).max(dim=1).values
        by_exemplar = scores.argmax(dim=1) == n_phrases
        rejected = torch.where(by_exemplar, neg >= scores[:, n_phrases], rejected)
    return scores, rejected
