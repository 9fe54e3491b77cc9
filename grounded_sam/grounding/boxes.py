"""Box re-prompts of proposals, decoded once per region and kept in the image's index.

Which box a proposal has, and what SAM returns for it, does not depend on the phrase. The
decoder output for a proposal's box (after ``refine`` passes feeding the mask back) is
therefore kept in the index's :class:`~grounded_sam.grounding.index.BoxDecodeCache`
(:attr:`ImageIndex.box_cache`), keyed by ``refine``: a region is decoded at most once per refine
level, by :meth:`GroundedSAM.index` (all proposals, when ``prefetch_boxes`` is on) or by the
first query that selects it.

Thread safety: :func:`region_box_masks` may be called on one index from many threads; the
cache's lock guards its rows (see :class:`~grounded_sam.grounding.index.BoxDecodeCache`),
and two threads that miss the same rows at once decode them identically, the first write
kept. The decoder calls themselves are only as thread-safe as the predictor passed in.

What refine costs: every level is one more decoder pass per box, with the previous low-res
logits as mask input. Mask inputs make the dense embedding differ per prompt, so those passes
take the fast decoder's plain path (no layer-0 sharing): a refine pass costs ~1.3x a box pass.
With prefetching that cost is paid in ``index`` (N proposals x (1 + refine) prompts) and a new
phrase pays none of it.
"""

from __future__ import annotations

import torch

from grounded_sam.grounding.index import ImageIndex
from grounded_sam.sam.predictor import ImageEmbedding, SamPredictor

__all__ = ["decode_boxes", "region_box_masks"]


def decode_boxes(
    predictor: SamPredictor,
    embedding: ImageEmbedding,
    boxes: torch.Tensor,
    refine: int,
    chunk: int,
    points: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Box prompts (+ ``refine`` passes feeding each mask back), ``chunk`` boxes per call.

    Args:
        predictor: The SAM predictor.
        embedding: The image's kept embedding.
        boxes: (M, 4) xyxy, original pixels.
        refine: Extra passes with the previous low-res logits as mask prompt (same prompts).
        chunk: Prompts per decoder call.
        points: (M, K, 2) xy points prompted with each box, original pixels, or None.
        labels: (M, K) their labels (1 / 0 / -1 padding); required with ``points``.

    Returns:
        ``(low_res_logits (M, L, L), iou (M,))``.
    """
    logits, ious = [], []
    for start in range(0, boxes.shape[0], chunk):
        sl = slice(start, start + chunk)
        kw = {"boxes": boxes[sl], "multimask_output": False}
        if points is not None:
            kw.update(points=points[sl], labels=labels[sl])
        out = predictor.decode(embedding, **kw)
        for _ in range(refine):
            out = predictor.decode(embedding, mask_input=out.low_res_logits, **kw)
        logits.append(out.low_res_logits[:, 0])
        ious.append(out.iou_scores[:, 0])
    return torch.cat(logits), torch.cat(ious)


@torch.inference_mode()
def region_box_masks(
    predictor: SamPredictor,
    index: ImageIndex,
    regions: torch.Tensor,
    refine: int,
    chunk: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """SAM's answer to the boxes of some proposals, decoding only those not decoded before.

    Args:
        predictor: The SAM predictor the index was built with.
        index: The image's index; its :attr:`~ImageIndex.box_cache` keeps what is decoded.
        regions: (M,) long proposal indices (repeats allowed).
        refine: Extra decoder passes feeding each mask back with its box.
        chunk: Boxes per decoder call.

    Returns:
        ``(low_res_logits (M, L, L), iou (M,))`` float32 on the index's device, in the order
        of ``regions``.
    """
    return index.box_cache.rows(
        refine,
        regions,
        index.proposals.boxes,
        index.proposals.low_res_size,
        lambda boxes: decode_boxes(predictor, index.embedding, boxes, refine, chunk),
    )
