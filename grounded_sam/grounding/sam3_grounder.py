"""SAM 3 as a grounder: its text-conditioned detector run on an index's kept vision features.

A SAM 3 checkpoint reads the text itself, so the CLIP path's grid proposals, CLIP region
embeddings and SAM box re-prompts have no part here. :func:`sam3_index` keeps SAM 3's
phrase-independent vision features in an ordinary
:class:`~grounded_sam.grounding.index.ImageIndex` (the three FPN levels as the embedding and its
two ``features``, no proposals), so saving, loading and validating an index, the byte-bounded
store and the many-images loop work unchanged. :class:`Sam3Grounder` (a
:class:`~grounded_sam.grounding.grounder.Grounder`) runs only the text-conditioned part on it;
:class:`Sam3Refiner` makes one mask per object from SAM 3's own masks.

What a query's options mean with SAM 3:

* **threshold**: a detection's ``confidence`` is SAM 3's score,
  ``sigmoid(query logit) * sigmoid(presence logit)``: the presence token's probability that the
  phrase is in the image at all, times the query's probability of being an instance of it, as
  ``Sam3Processor.post_process_instance_segmentation`` computes it; a detection is kept when
  it reaches ``threshold`` (the processor keeps scores above it: the same but for exact ties).
  The query and presence factors are returned too (``data["query_score"]``,
  ``data["presence_score"]``).
* **several phrases** go through the detector in one batched pass per
  :attr:`Sam3Grounder.phrase_batch` phrases; each phrase is scored on its own (sigmoids, not a
  softmax), so ``calibration`` ``"joint"`` and ``"per_phrase"`` give the same scores. What
  ``"joint"`` adds for CLIP, phrases competing for a region, holds in both modes in the one
  way SAM 3 allows: an instance claimed by several phrases (mask IoU above the refiner's
  ``nms_thresh``) keeps only its best-scoring phrase.
* **negative phrases** (SAM 3 has no negative-phrase input) are detected with the phrases; a
  detection of yours is removed when a detection of a negative phrase overlaps it (mask IoU
  above :attr:`Sam3Grounder.negative_iou`) with a score at least as high: as for CLIP, a region
  whose best match is a negative is never returned.
* **exemplars** (xyxy boxes, "more like this") are SAM 3's own box prompts (positive
  exemplars), with the text ``"visual"`` as ``Sam3Processor`` fills in for boxes alone; their
  detections get ``exemplar_label``.
* **negative_exemplars** (xyxy boxes, "not this") are SAM 3 box prompts with label 0, added
  to every prompt of the query: each phrase is then its own prompt (its text, then the boxes;
  no batching over phrases), and the exemplar prompt holds both kinds of boxes. Negative
  phrases stay text-only.
* **points** filter: a detection must contain every foreground click's pixel and no background
  click's (SAM 3's image detector takes no clicks, so masks are not re-prompted with them).
* **top_k**, **keep_parts**, **part_thresh**, **min_region_area**: as for CLIP
  (:func:`~grounded_sam.grounding.dedup.deduplicate` on SAM 3's masks, then ``top_k`` distinct
  objects per phrase). **refine** has no effect: the masks are SAM 3's mask decoder's.

Thread safety: the grounder and the refiner hold the back-end and constants only (frozen
dataclasses) and write nothing into the index.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from grounded_sam.grounding.clicks import honours_clicks, user_clicks
from grounded_sam.grounding.dedup import deduplicate, limit_per_phrase
from grounded_sam.grounding.grounder import Candidates, query_labels
from grounded_sam.grounding.index import ImageIndex
from grounded_sam.grounding.options import QueryOptions
from grounded_sam.grounding.refine import Refined
from grounded_sam.grounding.selection import Selection
from grounded_sam.inputs import as_boxes
from grounded_sam.sam.everything import EverythingSettings
from grounded_sam.sam.proposals import MaskFrame, Proposals
from grounded_sam.sam.sam3 import Sam3Backend, Sam3Detections, Sam3Prompts
from grounded_sam.sam.types import ImageEmbedding
from grounded_sam.utils.masks import batched_mask_iou, clean_small_regions

__all__ = [
    "NO_EVERYTHING",
    "NO_PREDICT",
    "Sam3Candidates",
    "Sam3Grounder",
    "Sam3Refiner",
    "sam3_engine",
    "sam3_index",
    "vetoed_by_negatives",
]

logger = logging.getLogger(__name__)


def sam3_index(
    backend: Sam3Backend,
    image: np.ndarray,
    embedding: ImageEmbedding,
    settings: EverythingSettings,
    model_ids: tuple[str, str],
    weights_fingerprint: str,
) -> ImageIndex:
    """The index of an image for SAM 3: its vision features, no proposals.

    Args:
        backend: The SAM 3 back-end that encoded the image.
        image: (H, W, 3) uint8 RGB.
        embedding: ``backend.encode(image)``.
        settings: Stored as the index's settings (not used by SAM 3).
        model_ids: (sam, clip) ids of the engine (clip ``""``).
        weights_fingerprint: Of the engine's model.

    Returns:
        An :class:`ImageIndex` with zero proposals whose ``embedding`` carries SAM 3's FPN
        levels; it saves, loads and is validated as any index.
    """
    h, w = embedding.original_size
    logger.info("Indexed %dx%d image for SAM 3 (its vision features)", w, h)
    frame = MaskFrame.of(backend.transform)
    side, device = frame.low_res_size, embedding.embeddings.device
    empty = torch.zeros(0, device=device)
    proposals = Proposals(
        low_res_logits=torch.zeros(0, side, side, device=device),
        crop_index=torch.zeros(0, dtype=torch.long, device=device),
        crop_boxes=torch.tensor([[0, 0, w, h]], dtype=torch.long, device=device),
        crop_input_sizes=[tuple(embedding.input_size)],
        boxes=torch.zeros(0, 4, device=device),
        predicted_iou=empty,
        stability_score=empty.clone(),
        point_coords=torch.zeros(0, 2, device=device),
        original_size=(h, w),
        frame=frame,
    )
    return ImageIndex(
        image=image,
        embedding=embedding,
        proposals=proposals,
        region_embeddings=torch.zeros(0, 1, device=device),
        frame_masks=torch.zeros(0, 1, 1, dtype=torch.bool, device=device),
        settings=settings,
        model_ids=model_ids,
        weights_fingerprint=weights_fingerprint,
    )


@dataclass(frozen=True)
class Sam3Candidates(Candidates):
    """SAM 3's detections for a query, with their own masks, best first.

    ``selection.region`` is each detection's DETR query index, ``selection.score`` SAM 3's
    score, ``raw_score`` the query factor alone (``sigmoid(query logit)``).

    Attributes:
        low_res: (M, h, w) float32 mask logits over the whole (stretched) image.
        boxes: (M, 4) float32 SAM 3's predicted boxes, xyxy original pixels.
        presence: (M,) float32 presence probability of each detection's prompt.
    """

    low_res: torch.Tensor
    boxes: torch.Tensor
    presence: torch.Tensor

    def take(self, index: torch.Tensor) -> Sam3Candidates:
        """The candidates at ``index`` ((K,) long or (M,) bool), order kept."""
        return Sam3Candidates(
            self.selection.take(index),
            self.raw_score[index],
            self.labels,
            self.low_res[index],
            self.boxes[index],
            self.presence[index],
        )

    def detection_data(self) -> dict[str, np.ndarray]:
        """Per-detection ``Detections.data`` entries of SAM 3 (replacing the CLIP ones).

        ``clip_score`` NaN (no CLIP), ``query_score`` and ``presence_score`` (the two
        factors of ``confidence``), ``query_box`` (SAM 3's predicted box, (M, 4) xyxy
        pixels; ``xyxy`` is the tight box of the mask, as for every result).
        """
        n = len(self)
        return {
            "clip_score": np.full(n, np.nan, dtype=np.float32),
            "query_score": self.raw_score.float().cpu().numpy(),
            "presence_score": self.presence.float().cpu().numpy(),
            "query_box": self.boxes.float().cpu().numpy().reshape(n, 4),
        }


@dataclass(frozen=True)
class Sam3Grounder:
    """SAM 3's text-conditioned detector over an index's kept vision features.

    A :class:`~grounded_sam.grounding.grounder.TextGrounder`: it makes its engine's indexes
    (:func:`sam3_index`) and says what the engine refuses (:meth:`refusal`).

    Attributes:
        backend: The SAM 3 back-end (model and processor).
        phrase_batch: Prompts per detector pass (bounds memory: the DETR encoder holds the
            image's tokens once per prompt).
        negative_iou: A negative phrase's detection removes yours when their masks overlap by
            more than this (IoU) and it scores at least as high.
    """

    backend: Sam3Backend
    phrase_batch: int = 16
    negative_iou: float = 0.5

    def make_index(
        self,
        image: np.ndarray,
        embedding: ImageEmbedding,
        settings: EverythingSettings,
        model_ids: tuple[str, str],
        weights_fingerprint: str,
    ) -> ImageIndex:
        """:func:`sam3_index` with this grounder's back-end.

        See :meth:`~grounded_sam.grounding.grounder.TextGrounder.make_index`.
        """
        backend, fingerprint = self.backend, weights_fingerprint
        return sam3_index(backend, image, embedding, settings, model_ids, fingerprint)

    def refusal(self, operation: str) -> str | None:
        """:data:`NO_PREDICT` for ``"predict"``, :data:`NO_EVERYTHING` for ``"everything"``."""
        return {"predict": NO_PREDICT, "everything": NO_EVERYTHING}.get(operation)

    def detect(self, index: ImageIndex, prompts: Sam3Prompts) -> list[Sam3Detections]:
        """The detector on some prompts, :attr:`phrase_batch` at a time."""
        step = self.phrase_batch
        return [
            self.backend.detect(
                index.embedding,
                Sam3Prompts(prompts.features[i : i + step], prompts.mask[i : i + step]),
            )
            for i in range(0, len(prompts), step)
        ]

    def ground(
        self, index: ImageIndex, phrases: Sequence[str], options: QueryOptions
    ) -> Sam3Candidates:
        """See :meth:`grounded_sam.grounding.grounder.Grounder.ground` and the module doc."""
        phrases = list(phrases)
        negatives = options.negatives_for(phrases)
        labels = query_labels(phrases, options)
        runs: list[tuple[Sam3Detections, int, int]] = []  # (detections, first label, rows)
        texts = phrases + negatives
        avoid = None  # negative exemplar boxes: label 0 in every prompt of the query
        if options.negative_exemplars is not None:
            avoid = torch.from_numpy(as_boxes(options.negative_exemplars, index.size))
        batched = texts if avoid is None else negatives
        first = 0 if avoid is None else len(phrases)
        if avoid is not None:  # one prompt per phrase: its text, then the boxes to avoid
            for i, phrase in enumerate(phrases):
                prompt = self.backend.box_prompt(
                    index.embedding, avoid, torch.zeros(len(avoid), dtype=torch.long), phrase
                )
                runs.append((self.backend.detect(index.embedding, prompt), i, 1))
        if batched:
            for det in self.detect(index, self.backend.text_prompts(batched)):
                runs.append((det, first, len(det.logits)))
                first += len(det.logits)
        if options.exemplars is not None:
            boxes = torch.from_numpy(as_boxes(options.exemplars, index.size))
            box_labels = torch.ones(len(boxes), dtype=torch.long)
            if avoid is not None:
                boxes = torch.cat([boxes, avoid])
                box_labels = torch.cat([box_labels, torch.zeros(len(avoid), dtype=torch.long)])
            det = self.backend.detect(
                index.embedding, self.backend.box_prompt(index.embedding, boxes, box_labels)
            )
            runs.append((det, len(texts), 1))
        found = self._select(index, runs, options.threshold, labels)
        n_pos = len(phrases)
        exemplar = len(texts) if options.exemplars is not None else None
        label = found.selection.phrase
        is_neg = (label >= n_pos) & (label != (-1 if exemplar is None else exemplar))
        keep = ~is_neg
        if bool(is_neg.any()) and bool(keep.any()):
            small = (found.low_res.sigmoid() > self.backend.mask_threshold).cpu()
            score = found.selection.score
            keep &= ~vetoed_by_negatives(small, score, is_neg, self.negative_iou)
        found = found.take(keep)
        if exemplar is not None:  # the exemplar label follows the phrases in ``labels``
            phrase = torch.where(found.selection.phrase == exemplar, n_pos, found.selection.phrase)
            found = _replace_phrase(found, phrase)
        return found

    def _select(
        self,
        index: ImageIndex,
        runs: list[tuple[Sam3Detections, int, int]],
        threshold: float,
        labels: tuple[str, ...],
    ) -> Sam3Candidates:
        """Detections reaching ``threshold``, with their masks, sorted by descending score.

        Labels here number the prompts (phrases, negatives, exemplar prompt).
        """
        h, w = index.size
        scale = torch.tensor([w, h, w, h], dtype=torch.float32)
        parts: list[tuple[torch.Tensor, ...]] = []
        for det, first, rows in runs:
            scores = det.scores
            for r in range(rows):
                q = torch.nonzero(scores[r] >= threshold).flatten()
                if not q.numel():
                    continue
                logits = self.backend.mask_logits(index.embedding, det, r, q)
                parts.append((
                    q.cpu(),
                    torch.full((q.numel(),), first + r, dtype=torch.long),
                    scores[r, q].cpu(),
                    det.logits[r, q].sigmoid().cpu(),
                    logits,
                    det.boxes[r, q].cpu() * scale,
                    det.presence_logits[r].sigmoid().cpu().expand(q.numel()),
                ))  # fmt: skip
        if not parts:
            side = self.backend.encoder_shapes()[1][0][-1]
            none = Candidates.none(labels)
            return Sam3Candidates(
                none.selection, none.raw_score, none.labels,
                torch.zeros(0, side, side, device=index.embedding.embeddings.device),
                torch.zeros(0, 4), torch.zeros(0),
            )  # fmt: skip
        q, label, score, raw, logits, boxes, presence = (
            torch.cat(t) for t in zip(*parts, strict=True)
        )
        order = torch.argsort(score, descending=True, stable=True)
        device = logits.device
        return Sam3Candidates(
            Selection(q[order], label[order], score[order]),
            raw[order],
            labels,
            logits[order.to(device)],
            boxes[order],
            presence[order],
        )


def vetoed_by_negatives(
    masks: torch.Tensor, score: torch.Tensor, is_negative: torch.Tensor, iou: float = 0.5
) -> torch.Tensor:
    """Which detections a negative phrase's detection overlaps with at least their score.

    Args:
        masks: (M, h, w) bool masks of all detections, one frame.
        score: (M,) their scores.
        is_negative: (M,) bool, detections of a negative phrase.
        iou: Mask IoU above which two detections are the same instance.

    Returns:
        (M,) bool, True for a detection of the query's own labels that is vetoed (negative
        detections themselves are False: they are dropped anyway).
    """
    neg = torch.nonzero(is_negative).flatten()
    if not neg.numel():
        return torch.zeros_like(is_negative)
    overlap = batched_mask_iou(masks, masks[neg]) > iou  # (M, N)
    stronger = score[neg][None, :] >= score[:, None]
    return (overlap & stronger).any(1) & ~is_negative


def _replace_phrase(found: Sam3Candidates, phrase: torch.Tensor) -> Sam3Candidates:
    """``found`` with other label indices (same order)."""
    sel = found.selection
    return Sam3Candidates(
        Selection(sel.region, phrase, sel.score),
        found.raw_score, found.labels, found.low_res, found.boxes, found.presence,
    )  # fmt: skip


@dataclass(frozen=True)
class Sam3Refiner:
    """One mask per object from SAM 3's own masks (no re-prompt).

    Attributes:
        backend: The SAM 3 back-end (upscaling, mask threshold).
        nms_thresh: Masks overlapping a more confident one by more than this (mask IoU) are
            duplicates, whatever their labels: an instance claimed by two phrases keeps the
            better-scoring one.
    """

    backend: Sam3Backend
    nms_thresh: float = 0.5

    def refine(self, index: ImageIndex, candidates: Candidates, options: QueryOptions) -> Refined:
        """Distinct masks, at most ``options.top_k`` per label, at the image's size.

        Empty masks, parts of a larger same-label mask (unless ``keep_parts``), duplicates and
        masks missing the clicks are removed at the detector's mask resolution; the survivors
        are brought to (H, W), cleaned (``min_region_area``) and checked against the clicks.

        Returns:
            :class:`~grounded_sam.grounding.refine.Refined` with ``sam_iou`` NaN (SAM 3
            predicts no mask IoU).
        """
        if len(candidates) == 0 or not isinstance(candidates, Sam3Candidates):
            empty = torch.zeros(0, *index.size, dtype=torch.bool)
            return Refined(empty, torch.zeros(0), candidates)
        small = (candidates.low_res.sigmoid() > self.backend.mask_threshold).cpu()
        clicks = user_clicks(options, index.size)
        low_clicks = None
        if clicks is not None:
            (h, w), (sh, sw) = index.size, small.shape[-2:]
            low_clicks = (clicks[0] * torch.tensor([sw / w, sh / h]), clicks[1])
        keep = deduplicate(
            small,
            candidates.selection,
            self.nms_thresh,
            options.keep_parts,
            options.part_thresh,
            low_clicks,
        )
        keep = keep[limit_per_phrase(candidates.selection.take(keep), options.top_k)]
        chosen = candidates.take(keep)
        masks = self.backend.upscale(chosen.low_res, index.size).cpu()
        if options.min_region_area > 0:
            masks = _clean_masks(masks, options.min_region_area)
        filled = masks.flatten(1).any(1)
        if clicks is not None:
            filled &= honours_clicks(masks, *clicks)
        iou = torch.full((len(chosen),), float("nan"))
        return Refined(masks[filled], iou[filled], chosen.take(filled))


def _clean_masks(masks: torch.Tensor, area: int) -> torch.Tensor:
    """Remove islands and fill holes smaller than ``area`` pixels in (M, H, W) bool masks."""
    arr = masks.cpu().numpy()
    for i in range(len(arr)):
        arr[i], _ = clean_small_regions(arr[i], area)
    return torch.from_numpy(arr).to(masks.device)


#: Why ``predict()`` refuses a SAM 3 engine, and what to use instead. This engine loads SAM 3's
#: detector only (``Sam3Model``: text and exemplar boxes); its tracker's point/box decoder
#: (``Sam3TrackerModel``, the ``tracker_model.`` weights of the Hub's ``sam3_video`` layout) is not
#: loaded, so there is nothing here that decodes a click.
NO_PREDICT = (
    "predict() (clicks and boxes) needs a SAM-family point decoder, and a SAM 3 engine loads "
    "only SAM 3's text detector (not its tracker): for clicks and boxes load "
    "GroundedSAM.from_pretrained(sam='vit_b') (or 'vit_h', 'hq_vit_b', 'sam2.1_t'; CLI: "
    "--sam vit_b); with SAM 3 use query(index, 'phrase', exemplars=[[x1, y1, x2, y2]]) for "
    "boxes as examples, or points=[[x, y]] to keep the detections containing a click."
)
#: Why ``everything()`` refuses a SAM 3 engine, and what to use instead.
NO_EVERYTHING = (
    "everything() is SAM's automatic mask generator (a grid of point prompts), and a SAM 3 "
    "engine loads only SAM 3's text detector (no point decoder): load "
    "GroundedSAM.from_pretrained(sam='vit_b') (or 'sam2.1_t'; CLI: --sam vit_b) for it, or "
    "query SAM 3 with a generic phrase, query(index, 'object', threshold=0.3)."
)


def sam3_engine(
    sam: str | os.PathLike,
    clip: str | None,
    device: torch.device,
    dtype: torch.dtype,
    compile: bool = False,
    **kwargs: Any,
) -> dict[str, Any]:
    """Load a SAM 3 checkpoint: ``GroundedSAM``'s constructor arguments (no CLIP).

    Args:
        sam: Hub id, alias or local folder (see :func:`grounded_sam.sam.sam3.load_sam3`).
        clip: The CLIP spec the caller was given: not loaded (logged when it is not the
            default).
        device: Where to run.
        dtype: Weight precision.
        compile: Not supported for SAM 3 yet (logged, ignored).
        **kwargs: The rest of the constructor's arguments (``mask_nms_thresh`` is also the
            refiner's).

    Returns:
        ``predictor`` (the back-end), ``scorer`` None, ``grounder``, ``refiner``,
        ``model_ids`` (``(sam, "")``) and ``kwargs``.

    Raises:
        grounded_sam.errors.ModelLoadError: As :func:`~grounded_sam.sam.sam3.load_sam3`.
    """
    from grounded_sam.clip.loading import DEFAULT_CLIP
    from grounded_sam.sam.sam3 import load_sam3

    if clip and clip != DEFAULT_CLIP:
        logger.info("SAM 3 grounds text itself: CLIP %s is ignored (not loaded)", clip)
    if compile:
        logger.info("compile=True is not supported for SAM 3 yet; running uncompiled")
    backend = load_sam3(sam, device, dtype)
    logger.info("Loaded SAM 3 %s on %s (%s); no CLIP", os.fspath(sam), device, dtype)
    nms = kwargs.get("mask_nms_thresh", 0.5)
    return {
        "predictor": backend,
        "scorer": None,
        "grounder": Sam3Grounder(backend),
        "refiner": Sam3Refiner(backend, nms),
        "model_ids": (os.fspath(sam), ""),
        **kwargs,
    }
