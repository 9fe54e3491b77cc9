"""One object, one detection: part/whole de-duplication and the per-phrase limit."""

from __future__ import annotations

import torch

from grounded_sam.grounding.selection import Selection

__all__ = ["DEFAULT_PART_THRESH", "remove_parts", "limit_per_phrase"]

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
    phrase = chosen.phrase
    one_hot = torch.nn.functional.one_hot(phrase, int(phrase.max()) + 1)
    rank = (one_hot.cumsum(0) * one_hot).sum(1) - 1
    return torch.nonzero(rank < top_k).flatten()
