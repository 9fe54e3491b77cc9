"""The refiner: candidate regions re-prompted into SAM, one distinct mask per object.

:class:`BoxRefiner` takes a grounder's :class:`~grounded_sam.grounding.grounder.Candidates`
and the query's options and returns :class:`Refined` masks: each candidate's proposal box is
re-prompted on the index's kept embedding (with the query's clicks inside the box, when it
has clicks), in rounds until ``top_k`` distinct objects per label are found
(:func:`~grounded_sam.grounding.dedup.decode_until_distinct`). Empty masks, parts of a larger
same-label mask and duplicates are removed at the decoder's resolution; only the survivors
are upscaled to the image, cleaned of small islands and holes (``min_region_area``) and, with
clicks, checked once more to contain them. A video tracker can call it on each key frame.

Thread safety: the refiner holds its predictor and constants only (frozen dataclass). Box
re-prompts without clicks are decoded through
:func:`~grounded_sam.grounding.boxes.region_box_masks`, which keeps them in the index (see
that module for what may share an index).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from grounded_sam.grounding.boxes import region_box_masks
from grounded_sam.grounding.clicks import (
    decode_boxes_with_clicks,
    honours_clicks,
    keep_clicked_proposals,
    user_clicks,
)
from grounded_sam.grounding.dedup import decode_until_distinct, deduplicate
from grounded_sam.grounding.grounder import Candidates
from grounded_sam.grounding.index import ImageIndex
from grounded_sam.grounding.options import QueryOptions
from grounded_sam.sam.predictor import SamPredictor
from grounded_sam.utils.masks import clean_small_regions

__all__ = ["BoxRefiner", "Refined"]

Clicks = tuple[torch.Tensor, torch.Tensor]
"""``(points (K, 2) xy, labels (K,) 1 / 0)``."""


@dataclass(frozen=True)
class Refined:
    """The refiner's answer: one mask per distinct object, best first.

    Attributes:
        masks: (M, H, W) bool at the image's size, on the model's device.
        sam_iou: (M,) float32, SAM's predicted IoU of each mask.
        candidates: The M candidates the masks belong to (labels, scores, raw scores).
    """

    masks: torch.Tensor
    sam_iou: torch.Tensor
    candidates: Candidates

    def __len__(self) -> int:
        return int(self.masks.shape[0])


@dataclass(frozen=True)
class BoxRefiner:
    """Box re-prompts of candidates, de-duplicated at the decoder's resolution.

    Attributes:
        predictor: The SAM predictor the index was built with.
        nms_thresh: Masks overlapping a more confident one by more than this (mask IoU) are
            duplicates.
        chunk: Boxes per decoder call.
    """

    predictor: SamPredictor
    nms_thresh: float = 0.5
    chunk: int = 64

    def refine(self, index: ImageIndex, candidates: Candidates, options: QueryOptions) -> Refined:
        """Masks for the candidates: at most ``options.top_k`` distinct objects per label.

        Args:
            index: The image's index (its kept embedding and proposals).
            candidates: From a grounder, best first.
            options: The query's options (``top_k``, ``refine``, ``keep_parts``,
                ``part_thresh``, ``min_region_area``, ``points`` / ``point_labels``).

        Returns:
            The masks, best first (empty when no candidate survives).
        """
        if len(candidates) == 0:
            empty = torch.zeros(0, *index.size, dtype=torch.bool)
            return Refined(empty, torch.zeros(0), candidates)
        rounds = _Rounds(self, index, candidates, options)
        keep = decode_until_distinct(
            candidates.selection, options.top_k, rounds.decode, rounds.distinct
        )
        chosen, sam_iou = candidates.take(keep), rounds.iou[keep]
        masks = self._upscale(index, rounds.low_res[keep])
        if options.min_region_area > 0:
            masks = _clean_masks(masks, options.min_region_area)
        filled = masks.flatten(1).any(1)
        if rounds.clicks is not None:
            filled &= honours_clicks(masks, *rounds.clicks).to(filled.device)
        return Refined(masks[filled], sam_iou[filled], chosen.take(filled))

    def reprompt(
        self,
        index: ImageIndex,
        regions: torch.Tensor,
        refine: int,
        clicks: Clicks | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Box re-prompt of some proposals, with the clicks inside each box when given.

        Without clicks a region is decoded once per refine level and kept in the index. With
        clicks, a decode that misses its clicks falls back to the proposal's own mask (when
        that one honours them).

        Args:
            index: The image's index.
            regions: (M,) long proposal indices.
            refine: Extra decoder passes feeding each mask back with its prompts.
            clicks: ``(points (K, 2) original pixels, labels (K,))`` or None.

        Returns:
            ``(low_res_logits (M, L, L), iou (M,))``.
        """
        if clicks is None:
            return region_box_masks(self.predictor, index, regions, refine, self.chunk)
        boxes = index.proposals.boxes[regions]
        low_res, iou = decode_boxes_with_clicks(
            self.predictor, index.embedding, boxes, *clicks, refine, self.chunk
        )
        props = index.proposals
        low_res = keep_clicked_proposals(
            low_res,
            props.low_res_logits[regions],
            props.crop_index[regions] == 0,
            *self.low_res_clicks(index, clicks),
            self.valid_size(index),
            self.predictor.mask_threshold,
        )
        return low_res, iou

    def valid_size(self, index: ImageIndex) -> tuple[int, int]:
        """(h, w) of the low-res decoder frame that the image covers (the rest is padding)."""
        return self.predictor.transform.low_res_valid_size(index.embedding.input_size)

    def low_res_clicks(self, index: ImageIndex, clicks: Clicks) -> Clicks:
        """The clicks scaled from original pixels into the low-res decoder frame."""
        vh, vw = self.valid_size(index)
        to_low_res = torch.tensor([vw / index.size[1], vh / index.size[0]])
        return clicks[0] * to_low_res, clicks[1]

    def _upscale(self, index: ImageIndex, low_res: torch.Tensor) -> torch.Tensor:
        """(M, L, L) logits -> (M, H, W) bool masks, upscaled one at a time.

        The float logits of all M masks at full resolution would be 4x the masks themselves
        (gigabytes on large images).
        """
        h, w = index.size
        out = torch.empty((low_res.shape[0], h, w), dtype=torch.bool, device=low_res.device)
        for i in range(low_res.shape[0]):
            full = self.predictor.upscale(index.embedding, low_res[i : i + 1, None])[0, 0]
            out[i] = full > self.predictor.mask_threshold
        return out


class _Rounds:
    """The decodes of one :meth:`BoxRefiner.refine` call, filled round by round.

    :meth:`decode` and :meth:`distinct` are the two callbacks of
    :func:`~grounded_sam.grounding.dedup.decode_until_distinct`.
    """

    def __init__(
        self, refiner: BoxRefiner, index: ImageIndex, candidates: Candidates, opts: QueryOptions
    ) -> None:
        self.refiner, self.index, self.candidates, self.opts = refiner, index, candidates, opts
        self.clicks = user_clicks(opts, index.size)
        self.low_clicks = None
        if self.clicks is not None:
            self.low_clicks = refiner.low_res_clicks(index, self.clicks)
        self.valid = refiner.valid_size(index)
        self.low_res: torch.Tensor | None = None  # (M, L, L) logits, rows filled when decoded
        self.iou: torch.Tensor | None = None  # (M,)

    def decode(self, rows: torch.Tensor) -> None:
        regions = self.candidates.selection.region[rows]
        logits, iou = self.refiner.reprompt(self.index, regions, self.opts.refine, self.clicks)
        if self.low_res is None:
            self.low_res = logits.new_zeros(len(self.candidates), *logits.shape[1:])
            self.iou = iou.new_zeros(len(self.candidates))
        self.low_res[rows], self.iou[rows] = logits, iou

    def distinct(self, rows: torch.Tensor) -> torch.Tensor:
        vh, vw = self.valid
        small = self.low_res[rows][:, :vh, :vw] > self.refiner.predictor.mask_threshold
        kept = deduplicate(
            small,
            self.candidates.selection.take(rows),
            self.refiner.nms_thresh,
            self.opts.keep_parts,
            self.opts.part_thresh,
            self.low_clicks,
        )
        return rows[kept]


def _clean_masks(masks: torch.Tensor, area: int) -> torch.Tensor:
    """Remove islands and fill holes smaller than ``area`` pixels in (M, H, W) bool masks."""
    arr = masks.cpu().numpy()
    for i in range(len(arr)):
        arr[i], _ = clean_small_regions(arr[i], area)
    return torch.from_numpy(arr).to(masks.device)
