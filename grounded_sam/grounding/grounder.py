"""Grounders: how a query's phrases (and exemplars) become candidate regions of an index.

A :class:`Grounder` turns an :class:`~grounded_sam.grounding.index.ImageIndex`, the query's
phrases and its :class:`~grounded_sam.grounding.options.QueryOptions` into
:class:`Candidates`: the regions chosen for each label with their confidences, best first.
What a grounder needs besides that (a CLIP scorer, a SAM predictor, background phrases) it
holds itself, so the interface names no model. :class:`ClipGrounder` (CLIP over SAM's grid
proposals) is the first implementation; a detector that reads text itself (SAM 3) is meant
to be a second one. The candidates then go to the refiner
(:class:`grounded_sam.grounding.refine.BoxRefiner`), which turns them into masks; a video
tracker can call both on each key frame.

Thread safety: a grounder holds its models and constants only (frozen dataclass); it writes
nothing into the index, so one grounder may serve concurrent queries when its models may.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import torch

from grounded_sam.grounding.candidates import score_candidates
from grounded_sam.grounding.clicks import proposals_honouring_clicks, user_clicks
from grounded_sam.grounding.exemplars import embed_exemplars, exemplar_scores
from grounded_sam.grounding.index import ImageIndex
from grounded_sam.grounding.options import QueryOptions
from grounded_sam.grounding.scoring import DEFAULT_BACKGROUND_PHRASES, similarity
from grounded_sam.grounding.selection import Selection, select_regions
from grounded_sam.inputs import as_boxes
from grounded_sam.sam.predictor import SamPredictor

if TYPE_CHECKING:
    import numpy as np

    from grounded_sam.sam.everything import EverythingSettings
    from grounded_sam.sam.types import ImageEmbedding

__all__ = [
    "NO_NEGATIVE_EXEMPLARS",
    "Candidates",
    "ClipGrounder",
    "Grounder",
    "RegionScorer",
    "TextGrounder",
    "query_labels",
]

#: Why the CLIP grounder refuses ``negative_exemplars``.
NO_NEGATIVE_EXEMPLARS = (
    "negative_exemplars (--negative-exemplar) need a SAM 3 checkpoint (--sam sam3 or a local "
    "SAM 3 folder), which takes boxes to avoid as prompts; with CLIP over SAM proposals, "
    "name what to leave out as a negative phrase instead (negative=..., --negative)."
)


class RegionScorer(Protocol):
    """What :class:`ClipGrounder` needs from a region/text scorer (CLIP, or a stand-in)."""

    logit_scale: float

    def encode_text(self, phrases: list[str]) -> torch.Tensor:
        """(P, D) L2-normalised phrase embeddings."""
        ...

    def encode_regions(
        self, image: torch.Tensor, boxes: torch.Tensor, masks: torch.Tensor | None
    ) -> torch.Tensor:
        """(N, D) L2-normalised region embeddings (see ClipScorer.encode_regions)."""
        ...


@dataclass(frozen=True)
class Candidates:
    """Regions a grounder chose for a query, sorted by descending confidence.

    Attributes:
        selection: ``region`` (M,) long proposal indices into the index, ``phrase`` (M,) long
            index into ``labels`` (each region's single label), ``score`` (M,) float32
            calibrated confidence in [0, 1].
        raw_score: (M,) float32, the grounder's uncalibrated similarity of each region to its
            label (the CLIP cosine for :class:`ClipGrounder`).
        labels: The label names: the query's phrases, then the exemplar label when the query
            has exemplars.
    """

    selection: Selection
    raw_score: torch.Tensor
    labels: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.selection)

    def take(self, index: torch.Tensor) -> Candidates:
        """The candidates at ``index`` ((K,) long or (M,) bool), order kept."""
        return Candidates(self.selection.take(index), self.raw_score[index], self.labels)

    @classmethod
    def none(cls, labels: Sequence[str], device: torch.device | str = "cpu") -> Candidates:
        """No candidates (nothing matched, or an index without regions)."""
        empty = torch.zeros(0, dtype=torch.long, device=device)
        score = torch.zeros(0, device=device)
        return cls(Selection(empty, empty.clone(), score), score.clone(), tuple(labels))


class Grounder(Protocol):
    """Turns an index and a query into candidate regions (see the module docstring)."""

    def ground(
        self, index: ImageIndex, phrases: Sequence[str], options: QueryOptions
    ) -> Candidates:
        """Candidate regions for the phrases (and ``options.exemplars``).

        Args:
            index: The image's index.
            phrases: The query's parsed phrases (may be empty for an exemplar-only query).
            options: The query's validated options (``check_for_image`` already passed).

        Returns:
            Candidates labelled with :func:`query_labels`, best first; at most one label per
            region; not yet limited to ``top_k`` (the refiner counts distinct objects).
        """
        ...


@runtime_checkable
class TextGrounder(Grounder, Protocol):
    """A grounder that reads the text itself (SAM 3): no CLIP, no grid proposals.

    Its engine's back-end encodes images (``encode`` / ``encode_batch``) and the grounder
    makes the index from that embedding; the pipeline asks it, not a family name, what its
    engine cannot do. A new text-grounder family implements this and registers a
    :class:`~grounded_sam.sam.families.GrounderFamily`.
    """

    def make_index(
        self,
        image: np.ndarray,
        embedding: ImageEmbedding,
        settings: EverythingSettings,
        model_ids: tuple[str, str],
        weights_fingerprint: str,
    ) -> ImageIndex:
        """The index of an image from its back-end's embedding.

        Args:
            image: (H, W, 3) uint8 RGB.
            embedding: The back-end's embedding of ``image``.
            settings: The engine's proposal settings (stored in the index).
            model_ids: (sam, clip) ids of the engine.
            weights_fingerprint: Of the engine's models.

        Returns:
            An immutable :class:`ImageIndex`.
        """
        ...

    def refusal(self, operation: str) -> str | None:
        """Why the engine cannot run ``operation``, and what to use instead.

        Args:
            operation: ``"predict"`` (SAM's clicks and boxes) or ``"everything"``.

        Returns:
            A one-line message for a ValueError, or None when the engine can run it.
        """
        ...


def query_labels(phrases: Sequence[str], options: QueryOptions) -> tuple[str, ...]:
    """A query's label names: its phrases, then the exemplar label when it has exemplars."""
    return (*phrases, *([options.exemplar_label] if options.exemplars is not None else []))


@dataclass(frozen=True)
class ClipGrounder:
    """CLIP over SAM proposals: every region's kept CLIP embedding scored against the text.

    The phrases are encoded together with the negatives and the background phrases; the
    cosine similarities are calibrated (``options.calibration``, see
    :func:`grounded_sam.grounding.scoring.score_phrases`), exemplar boxes add one label (see
    :mod:`grounded_sam.grounding.exemplars`), a region whose best match is a negative is
    vetoed, clicks (``options.points``) keep only the regions whose proposal honours them,
    and :func:`~grounded_sam.grounding.selection.select_regions` keeps the regions whose best
    label reaches ``options.threshold``.

    Attributes:
        predictor: SAM predictor the index was built with (decodes exemplar boxes).
        scorer: The region/text scorer the index's region embeddings came from.
        background_phrases: Generic phrases every phrase must beat.
    """

    predictor: SamPredictor
    scorer: RegionScorer
    background_phrases: tuple[str, ...] = DEFAULT_BACKGROUND_PHRASES

    def ground(
        self, index: ImageIndex, phrases: Sequence[str], options: QueryOptions
    ) -> Candidates:
        """See :meth:`Grounder.ground`."""
        phrases = list(phrases)
        negatives = options.negatives_for(phrases)
        if options.negative_exemplars is not None:
            raise ValueError(NO_NEGATIVE_EXEMPLARS)
        labels = query_labels(phrases, options)
        if len(index) == 0:
            return Candidates.none(labels, index.region_embeddings.device)
        allowed = None
        clicks = user_clicks(options, index.size)
        if clicks is not None:
            allowed = proposals_honouring_clicks(index.frame_masks, *clicks, index.size)
        text = self.scorer.encode_text(phrases + negatives + list(self.background_phrases))
        cosine = similarity(index.region_embeddings, text.to(index.region_embeddings.device))
        logit_scale = float(self.scorer.logit_scale)
        raw = cosine[:, : len(phrases)]
        ex_score = None
        if options.exemplars is not None:
            boxes = as_boxes(options.exemplars, index.size)
            ex_emb = embed_exemplars(self.predictor, self.scorer, index, boxes)
            ex_score, ex_cos = exemplar_scores(index.region_embeddings, ex_emb, logit_scale)
            raw = torch.cat([raw, ex_cos[:, None]], dim=1)
        scores, rejected = score_candidates(
            cosine, len(phrases), len(negatives), logit_scale, options.calibration, ex_score
        )
        allowed = ~rejected if allowed is None else allowed & ~rejected
        chosen = select_regions(scores, options.threshold, None, allowed)
        return Candidates(chosen, raw[chosen.region, chosen.phrase], labels)
