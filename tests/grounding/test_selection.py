"""select_regions on hand-made score tables: one label per region, threshold, top_k, order."""

from __future__ import annotations

import pytest
import torch

from grounded_sam.grounding.selection import Selection, phrase_rank, select_regions

#: 6 regions x 3 phrases. Best label per region: 0 -> p1 .9, 1 -> p0 .8, 2 -> p0 .7,
#: 3 -> p2 .2 (weak), 4 -> p0 .6, 5 -> p1 .75.
SCORES = torch.tensor(
    [
        [0.05, 0.90, 0.05],
        [0.80, 0.10, 0.10],
        [0.70, 0.20, 0.10],
        [0.10, 0.15, 0.20],
        [0.60, 0.55, 0.00],
        [0.10, 0.75, 0.15],
    ]
)


def as_lists(sel: Selection) -> tuple[list[int], list[int], list[float]]:
    return sel.region.tolist(), sel.phrase.tolist(), [round(v, 4) for v in sel.score.tolist()]


def test_each_region_gets_its_best_phrase_and_passes_the_threshold_on_it() -> None:
    region, phrase, score = as_lists(select_regions(SCORES, 0.5, None))
    assert region == [0, 1, 5, 2, 4]  # region 3 (best .2) is below; sorted by score
    assert phrase == [1, 0, 1, 0, 0]  # region 4: p0 (.6) beats p1 (.55): one label only
    assert score == [0.9, 0.8, 0.75, 0.7, 0.6]


def test_the_threshold_is_inclusive_and_zero_keeps_everything() -> None:
    assert as_lists(select_regions(SCORES, 0.75, None))[0] == [0, 1, 5]
    assert len(select_regions(SCORES, 0.0, None)) == 6
    assert len(select_regions(SCORES, 0.95, None)) == 0
    # a region is never kept for its second-best phrase, even when that one passes
    kept = select_regions(torch.tensor([[0.5, 0.45]]), 0.45, None)
    assert as_lists(kept) == ([0], [0], [0.5])


def test_top_k_counts_per_phrase_best_first() -> None:
    region, phrase, _ = as_lists(select_regions(SCORES, 0.5, 1))
    assert (region, phrase) == ([0, 1], [1, 0])  # best of p1 (.9) and of p0 (.8)
    region, phrase, _ = as_lists(select_regions(SCORES, 0.5, 2))
    assert (region, phrase) == ([0, 1, 5, 2], [1, 0, 1, 0])  # region 4 is p0's third
    assert as_lists(select_regions(SCORES, 0.5, 10)) == as_lists(select_regions(SCORES, 0.5, None))


def test_disallowed_regions_free_their_top_k_slot() -> None:
    allowed = torch.tensor([True, False, True, True, True, True])
    region, phrase, _ = as_lists(select_regions(SCORES, 0.5, 1, allowed))
    assert (region, phrase) == ([0, 2], [1, 0])  # region 1 vetoed: p0's best is now region 2
    none = torch.zeros(6, dtype=torch.bool)
    assert len(select_regions(SCORES, 0.0, None, none)) == 0
    as_int = allowed.to(torch.uint8).bool()  # any bool mask works
    assert as_lists(select_regions(SCORES, 0.5, 1, as_int))[0] == [0, 2]


def test_ties_keep_region_order_and_the_first_phrase() -> None:
    scores = torch.tensor([[0.4, 0.6], [0.6, 0.4], [0.6, 0.6], [0.6, 0.1]])
    region, phrase, score = as_lists(select_regions(scores, 0.5, None))
    assert region == [0, 1, 2, 3]  # equal scores: stable, by region index
    assert phrase == [1, 0, 0, 0]  # region 2: equal phrases, the first one wins
    assert score == [0.6] * 4
    # top_k among tied regions keeps the earlier ones
    assert as_lists(select_regions(scores, 0.5, 2))[0] == [0, 1, 2]


@pytest.mark.parametrize("shape", [(0, 3), (4, 0), (0, 0)])
def test_empty_inputs_give_an_empty_selection(shape: tuple[int, int]) -> None:
    sel = select_regions(torch.zeros(shape), 0.3, 5)
    assert len(sel) == 0
    assert sel.region.dtype == sel.phrase.dtype == torch.long
    assert sel.score.dtype == torch.float32


def test_output_types_and_take() -> None:
    sel = select_regions(SCORES.double(), 0.5, None)
    assert sel.region.dtype == sel.phrase.dtype == torch.long
    part = sel.take(torch.tensor([2, 0]))
    assert as_lists(part) == ([5, 0], [1, 1], [0.75, 0.9])
    mask = sel.take(sel.phrase == 0)
    assert as_lists(mask)[0] == [1, 2, 4]


def test_phrase_rank_counts_within_each_phrase() -> None:
    assert phrase_rank(torch.tensor([1, 0, 1, 0, 0, 2])).tolist() == [0, 0, 1, 1, 2, 0]
    assert phrase_rank(torch.tensor([3])).tolist() == [0]
