"""One object, one detection: part/whole de-duplication and the per-phrase limit."""

from __future__ import annotations

from collections.abc import Callable

import torch

from grounded_sam.grounding.clicks import honours_clicks
from grounded_sam.grounding.selection import Selection, phrase_rank
from grounded_sam.utils.masks import mask_nms

__all__ = [
    "DEFAULT_PART_THRESH",
    "decode_until_distinct",
    "deduplicate",
    "limit_per_phrase",
    "remove_parts",
]

DEFAULT_PART_THRESH = 0.8
"""A mask with more than this fraction of its pixels inside a larger mask of the same label
is a part of that object (and a duplicate of it unless parts are asked for)."""


def remove_parts(
    masks: torch.Tensor, labels: torch.Tensor, part_thresh: float = DEFAULT_PART_THRESH
) -> torch.Tensor:
    """Indices of the masks that are not parts of a larger mask with the same label.

    Mask ``i`` is a part of mask ``j`` when both have the same label, ``j`` has more pixels,
    and ``|i ∩ j| / |i| > part_thresh``. Parts are dropped, wholes kept (whatever their
    scores), so an object and one of its parts give one detection.

    Args:
        masks: (M, h, w) bool masks, all in one frame (any resolution).
        labels: (M,) long label of each mask.
        part_thresh: Containment above which a smaller mask is a part, in [0, 1].

    Returns:
        (K,) long indices of the kept masks, in their original order.
    """
    if not 0.0 <= part_thresh <= 1.0:
        raise ValueError(f"part_thresh must be in [0, 1], got {part_thresh!r}.")
    m = masks.shape[0]
    if m <= 1:
        return torch.arange(m, device=masks.device)
    flat = masks.flatten(1).float()
    area = flat.sum(1)  # (M,)
    inter = flat @ flat.T  # (M, M)
    contained = inter / area.clamp_min(1)[:, None]  # [i, j] = |i ∩ j| / |i|
    same = labels[:, None] == labels[None, :]
    larger = (area[None, :] > area[:, None]) | (
        (area[None, :] == area[:, None])
        & (
            torch.arange(m, device=masks.device)[None, :]
            < torch.arange(m, device=masks.device)[:, None]
        )
    )
    part = (contained > part_thresh) & same & larger
    part.fill_diagonal_(False)
    return torch.nonzero(~part.any(1)).flatten()


def limit_per_phrase(chosen: Selection, top_k: int | None) -> torch.Tensor:
    """Indices of the best ``top_k`` chosen regions of each phrase (order kept).

    Apply after all de-duplication, so that ``top_k`` distinct objects come back when that
    many exist.

    Args:
        chosen: Regions sorted by descending score.
        top_k: At most this many per phrase; None for no limit.

    Returns:
        (K,) long indices into ``chosen``.
    """
    n = len(chosen)
    if top_k is None or n == 0:
        return torch.arange(n, device=chosen.region.device)
    return torch.nonzero(phrase_rank(chosen.phrase) < top_k).flatten()


def deduplicate(
    small: torch.Tensor,
    chosen: Selection,
    nms_thresh: float,
    keep_parts: bool,
    part_thresh: float,
    clicks: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """One detection per object among re-prompted masks.

    Empty masks are dropped; then parts of a larger same-label mask (unless ``keep_parts``;
    before NMS, so that a part overlapping its whole never wins); then masks overlapping a
    more confident one by more than ``nms_thresh`` (mask IoU); then, with clicks, masks that
    miss them.

    Args:
        small: (M, h, w) bool low-res masks of the chosen regions.
        chosen: The M chosen regions, sorted by descending score.
        nms_thresh: Mask IoU above which the less confident mask is a duplicate.
        keep_parts: Keep parts.
        part_thresh: See :func:`remove_parts`.
        clicks: ``(points (K, 2) already in the masks' frame, labels (K,))`` or None.

    Returns:
        (K,) long indices into ``chosen``, by descending score.
    """
    keep = torch.nonzero(small.flatten(1).any(1)).flatten()
    if not keep_parts:
        keep = keep[remove_parts(small[keep], chosen.phrase[keep], part_thresh)]
    keep = keep[mask_nms(small[keep], chosen.score[keep], nms_thresh)]
    if clicks is not None:
        keep = keep[honours_clicks(small[keep], *clicks)]
    return keep


def decode_until_distinct(
    chosen: Selection,
    top_k: int | None,
    decode: Callable[[torch.Tensor], None],
    distinct: Callable[[torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """Re-prompt candidates in rounds until ``top_k`` distinct objects per phrase are found.

    The first round decodes each phrase's best ``top_k`` candidates (all of them when
    ``top_k`` is None); when de-duplication leaves a phrase short while it has candidates
    left, the next round doubles the per-phrase depth. So ``top_k`` counts distinct objects,
    and a query whose best candidates are all distinct costs one round, as before.

    Args:
        chosen: Candidates sorted by descending score.
        top_k: Distinct detections wanted per phrase; None for all.
        decode: ``decode(rows)`` re-prompts the candidates at ``rows`` ((R,) long).
        distinct: ``distinct(rows)`` returns the kept subset of the decoded ``rows``, by
            descending score.

    Returns:
        (K,) long indices into ``chosen``: at most ``top_k`` per phrase, by descending score.
    """
    m = len(chosen)
    device = chosen.region.device
    if m == 0:
        return torch.zeros(0, dtype=torch.long, device=device)
    n_phrases = int(chosen.phrase.max()) + 1
    rank = phrase_rank(chosen.phrase)
    done = torch.zeros(m, dtype=torch.bool, device=device)
    depth = top_k
    while True:
        todo = ~done if depth is None else ~done & (rank < depth)
        rows = torch.nonzero(todo).flatten()
        if rows.numel():
            decode(rows)
        done |= todo
        keep = distinct(torch.nonzero(done).flatten())
        if depth is None or bool(done.all()):
            break
        found = torch.bincount(chosen.phrase[keep], minlength=n_phrases)
        left = torch.bincount(chosen.phrase[~done], minlength=n_phrases)
        if not bool(((found < top_k) & (left > 0)).any()):
            break
        depth *= 2
    return keep[limit_per_phrase(chosen.take(keep), top_k)]
