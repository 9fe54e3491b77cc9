"""Choosing which scored regions become detections."""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["Selection", "phrase_rank", "select_regions"]


@dataclass
class Selection:
    """Regions chosen for a query.

    Attributes:
        region: (M,) long, index of each chosen proposal.
        phrase: (M,) long, index of its phrase (its single label).
        score: (M,) float32, its calibrated score for that phrase.
    """

    region: torch.Tensor
    phrase: torch.Tensor
    score: torch.Tensor

    def __len__(self) -> int:
        return int(self.region.shape[0])

    def take(self, index: torch.Tensor) -> Selection:
        """The chosen regions at ``index`` ((K,) long or (M,) bool), order kept."""
        return Selection(self.region[index], self.phrase[index], self.score[index])


def phrase_rank(phrase: torch.Tensor) -> torch.Tensor:
    """Each region's rank within its phrase, in the given order, without a Python loop.

    Args:
        phrase: (M,) long phrase index of regions (non-empty), e.g. sorted by descending
            score.

    Returns:
        (M,) long: 0 for a phrase's first region, 1 for its second, ...
    """
    one_hot = torch.nn.functional.one_hot(phrase, int(phrase.max()) + 1)
    return (one_hot.cumsum(0) * one_hot).sum(1) - 1


def select_regions(
    scores: torch.Tensor,
    threshold: float,
    top_k: int | None,
    allowed: torch.Tensor | None = None,
) -> Selection:
    """Give every region at most one label and keep the best per phrase.

    A region's label is its highest-scoring phrase; it is kept when that score reaches
    ``threshold``. Per phrase, at most ``top_k`` regions are kept, best first.

    Args:
        scores: (N, P) calibrated scores from :func:`grounded_sam.grounding.scoring.calibrate`.
        threshold: Minimum score in [0, 1].
        top_k: Maximum regions per phrase; None for no limit.
        allowed: Optional (N,) bool, regions that may be chosen at all.

    Returns:
        The selection, sorted by descending score.
    """
    n, p = scores.shape
    if n == 0 or p == 0:
        empty = torch.zeros(0, dtype=torch.long, device=scores.device)
        return Selection(empty, empty.clone(), torch.zeros(0, device=scores.device))
    best, phrase = scores.max(dim=1)
    keep = best >= threshold
    if allowed is not None:
        keep &= allowed.to(keep.device)
    region = torch.nonzero(keep).flatten()
    best, phrase = best[region], phrase[region]
    order = torch.argsort(best, descending=True, stable=True)
    region, best, phrase = region[order], best[order], phrase[order]
    if top_k is not None and region.numel():
        within = phrase_rank(phrase) < top_k
        region, best, phrase = region[within], best[within], phrase[within]
    return Selection(region=region, phrase=phrase, score=best)
