"""GroundedSAM: a phrase in, labeled instance masks out.

The expensive, phrase-independent work (SAM image encoder, grid proposals, CLIP region
embeddings) is done once per image by :meth:`GroundedSAM.index`. Each phrase is then answered
by :meth:`GroundedSAM.query` with a text encode, a matrix product, and one batched SAM decoder
call on the kept embedding. A checkpoint of a text-grounder family (SAM 3) grounds text itself:
its registry record (:class:`~grounded_sam.sam.families.GrounderFamily`) builds the engine, its
grounder (a :class:`~grounded_sam.grounding.grounder.TextGrounder`) makes the index from the
back-end's vision features, and no CLIP is loaded.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Literal

import supervision as sv
import torch

from grounded_sam.clip.loading import DEFAULT_CLIP
from grounded_sam.device import resolve_device, resolve_dtype
from grounded_sam.grounding.boxes import region_box_masks
from grounded_sam.grounding.grounder import ClipGrounder, Grounder, RegionScorer, TextGrounder
from grounded_sam.grounding.index import ImageIndex, weights_fingerprint
from grounded_sam.grounding.options import QueryOptions, query_phrases
from grounded_sam.grounding.refine import BoxRefiner
from grounded_sam.grounding.scoring import DEFAULT_BACKGROUND_PHRASES
from grounded_sam.inputs import ImageInput, check_int, load_image
from grounded_sam.results import (
    detection_metadata,
    grounded_detections,
    model_metadata,
    prompt_detections,
)
from grounded_sam.sam.everything import EverythingSettings, generate_proposals
from grounded_sam.sam.everything_results import proposals_to_detections
from grounded_sam.sam.loading import DEFAULT_SAM
from grounded_sam.sam.predictor import ImageEmbedding, SamPredictor
from grounded_sam.utils.progress import StageProgress

if TYPE_CHECKING:
    from grounded_sam.batch import ImageSources

__all__ = ["GroundedSAM", "RegionScorer", "DEFAULT_CLIP", "DEFAULT_SAM"]

logger = logging.getLogger(__name__)


#: Proposal settings used by :meth:`GroundedSAM.index` unless overridden: Meta's defaults
#: with a 16×16 grid (256 prompts), which covers objects down to ~1/16 of the image side.
DEFAULT_INDEX_SETTINGS = EverythingSettings(points_per_side=16, points_per_batch=64)


_DEFAULTS = QueryOptions()


class GroundedSAM:
    """Text-prompted instance segmentation: CLIP-scored SAM proposals re-prompted into SAM.

    ``confidence`` of a returned detection is the calibrated CLIP score of its label: the
    probability, from a softmax over the query's phrases plus a few background phrases at
    CLIP's own temperature, that the proposal region shows that phrase. It is comparable
    across images, so one ``threshold`` means the same everywhere; with the default
    ``calibration="joint"`` it also depends on the query's other phrases, with
    ``"per_phrase"`` it does not (see :meth:`query`). SAM's predicted
    IoU of the final mask is reported separately in ``data["sam_iou"]`` and the raw CLIP
    cosine similarity in ``data["clip_score"]``.

    Args:
        predictor: SAM predictor (image encoder + prompt decoder).
        scorer: Region/text scorer, normally a :class:`grounded_sam.clip.ClipScorer`.
        proposal_settings: Settings of the grid proposals made by :meth:`index`.
        max_regions: At most this many proposals (best predicted IoU first) are embedded
            with CLIP per image.
        threshold: Default minimum ``confidence`` of a detection.
        top_k: Default maximum detections per phrase (None: no limit).
        refine: Default number of extra decoder passes that feed a mask's own low-res
            logits back with its box (0 = box prompt only).
        mask_nms_thresh: Final masks overlapping more than this (mask IoU) are duplicates; the
            higher-confidence one is kept, so every object gets one mask and one label.
        background_phrases: Generic phrases competing with the user's phrases.
        model_ids: (sam, clip) names, shown in logs and stored in indexes.
        prefetch_boxes: Decode every proposal's box re-prompt (with ``refine`` passes) in
            :meth:`index`, so that a new phrase needs no SAM decoder pass at all; otherwise
            each region is decoded by the first query that selects it. Either way a region
            is decoded at most once per refine level (kept in the index).
        grounder: How phrases become candidate regions (None: a
            :class:`~grounded_sam.grounding.grounder.ClipGrounder` over ``scorer`` with
            ``background_phrases``; a :class:`~grounded_sam.grounding.sam3_grounder.Sam3Grounder`
            for SAM 3, whose ``predictor`` is then its back-end and ``scorer`` None).
        refiner: Candidates -> masks (None: a :class:`~grounded_sam.grounding.refine.BoxRefiner`).

    Attributes:
        options: The default :class:`~grounded_sam.grounding.options.QueryOptions` of
            :meth:`query` (``threshold``, ``top_k`` and ``refine`` from the arguments above;
            assign ``gs.options = gs.options.replace(...)`` to change them).
        grounder: The :class:`~grounded_sam.grounding.grounder.Grounder`.
        refiner: The :class:`~grounded_sam.grounding.refine.BoxRefiner` (box re-prompts,
            de-duplication, upscaling).
    """

    def __init__(
        self,
        predictor: SamPredictor,
        scorer: RegionScorer | None,
        *,
        proposal_settings: EverythingSettings = DEFAULT_INDEX_SETTINGS,
        max_regions: int = 100,
        threshold: float = _DEFAULTS.threshold,
        top_k: int | None = _DEFAULTS.top_k,
        refine: int = _DEFAULTS.refine,
        mask_nms_thresh: float = 0.5,
        background_phrases: Sequence[str] = DEFAULT_BACKGROUND_PHRASES,
        model_ids: tuple[str, str] = ("", ""),
        prefetch_boxes: bool = True,
        grounder: Grounder | None = None,
        refiner: Any = None,
    ) -> None:
        self.options = QueryOptions(threshold=threshold, top_k=top_k, refine=refine)
        self.predictor = predictor
        self.scorer = scorer
        self.proposal_settings = proposal_settings
        self.max_regions = check_int("max_regions", max_regions, 1)
        self.mask_nms_thresh = mask_nms_thresh
        self.background_phrases = list(background_phrases)
        self.model_ids = model_ids
        self.prefetch_boxes = prefetch_boxes
        self.grounder: Grounder = grounder or ClipGrounder(
            predictor, scorer, tuple(self.background_phrases)
        )
        self.refiner = refiner or BoxRefiner(
            predictor, mask_nms_thresh, proposal_settings.points_per_batch
        )

    @property
    def grounds_text(self) -> bool:
        """Whether the SAM checkpoint grounds text itself (SAM 3: no CLIP, no proposals)."""
        return isinstance(self.grounder, TextGrounder)

    @property
    def threshold(self) -> float:
        """Default minimum confidence (``options.threshold``)."""
        return self.options.threshold

    @property
    def top_k(self) -> int | None:
        """Default maximum detections per phrase (``options.top_k``; None: no limit)."""
        return self.options.top_k

    @property
    def refine(self) -> int:
        """Default extra decoder passes (``options.refine``)."""
        return self.options.refine

    @property
    def model_fingerprint(self) -> str:
        """A fingerprint of the SAM and CLIP weights (stored in indexes, checked by query)."""
        if getattr(self, "_fingerprint", None) is None:
            self._fingerprint = weights_fingerprint(
                getattr(self.predictor, "model", None), getattr(self.scorer, "model", None)
            )
        return self._fingerprint

    @property
    def device(self) -> torch.device:
        """Device the SAM model runs on."""
        return self.predictor.device

    # -- loading ---------------------------------------------------------------------------

    @classmethod
    def from_pretrained(
        cls,
        sam: str | os.PathLike = DEFAULT_SAM,
        clip: str = DEFAULT_CLIP,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        crop_style: Literal["masked", "box", "blur"] = "masked",
        compile: bool = False,
        **kwargs: Any,
    ) -> GroundedSAM:
        """Load SAM and CLIP and build the pipeline. The only place anything is downloaded.

        Args:
            sam: Hugging Face id (``"facebook/sam-vit-base"`` / ``-large`` / ``-huge``), an
                alias (``"vit_b"``, ``"vit_l"``, ``"vit_h"``) or a local ``save_pretrained``
                folder. A SAM 3 checkpoint (``"facebook/sam3"``, alias ``"sam3"``; gated on
                the Hub) is recognised from its config and grounds text itself.
            clip: open_clip ``"name:pretrained"`` tag, ``"hf-hub:org/repo"``,
                ``"local-dir:/path"`` or a local folder. Not loaded with SAM 3 (one log line
                says so when another than the default is given).
            device: ``"cuda"``, ``"cpu"``, ... ; None picks CUDA when present, else CPU.
            dtype: ``"float32"``, ``"bfloat16"`` or ``"float16"``; None picks float16 on CUDA,
                bfloat16 on CPUs with AMX / AVX512-BF16, float32 on other CPUs (see
                :func:`grounded_sam.device.resolve_dtype`). Applied to SAM; CLIP runs in the
                same dtype.
            crop_style: How region crops are shown to CLIP: ``"masked"`` (outside the mask
                filled with CLIP's mean color), ``"box"`` (plain crop) or ``"blur"``.
            compile: ``torch.compile`` SAM's image encoder and mask decoder (static shapes;
                see :class:`grounded_sam.sam.predictor.SamPredictor`; SAM ViT models only).
                For GPUs.
            **kwargs: Passed to the constructor (``threshold``, ``top_k``, ``refine``,
                ``max_regions``, ``proposal_settings``, ...).

        Returns:
            The pipeline.

        Raises:
            grounded_sam.errors.ModelLoadError: A model could not be found or read; the
                message names it and says how to use a local copy.
        """
        from grounded_sam.clip import load_clip
        from grounded_sam.clip.loading import clip_hub_model
        from grounded_sam.hub import hub_session
        from grounded_sam.sam.factory import load_predictor
        from grounded_sam.sam.loading import peek_grounder, resolve_sam_checkpoint, sam_hub_model

        dev = resolve_device(device)
        dt = resolve_dtype(dtype, dev)
        # Both models are checked before either loads (CLIP not for a text grounder's spec).
        family = peek_grounder(sam)
        with hub_session([sam_hub_model(sam), None if family else clip_hub_model(clip)]):
            family = family or resolve_sam_checkpoint(sam).grounder
            if family is not None:  # a text-grounder family (SAM 3) builds its own engine
                return cls(**family.build_engine(sam, clip, dev, dt, compile, **kwargs))
            # SAM, HQ-SAM or SAM 2, by its config
            predictor = load_predictor(sam, dev, dt, compile=compile)
            scorer = load_clip(clip, device=dev, dtype=dt, crop_style=crop_style)
        logger.info("Loaded SAM %s and CLIP %s on %s (%s)", sam, clip, dev, dt)
        return cls(predictor, scorer, model_ids=(os.fspath(sam), clip), **kwargs)

    # -- phrase-independent ------------------------------------------------------------------

    def index(
        self,
        image: ImageInput,
        *,
        proposal_settings: EverythingSettings | None = None,
        show_progress: bool | StageProgress = False,
        embedding: ImageEmbedding | None = None,
    ) -> ImageIndex:
        """Do all phrase-independent work for an image, once.

        Args:
            image: A path, a PIL image, or an (H, W, 3) uint8 RGB array.
            proposal_settings: Override :attr:`proposal_settings` for this image.
            show_progress: Show progress bars (SAM encoder, proposals, CLIP regions) on
                stderr; a :class:`~grounded_sam.utils.progress.StageProgress` also collects
                the stage times.
            embedding: This image's SAM embedding when already computed (e.g. by a batched
                encoder pass in :meth:`index_many`); None runs the encoder.

        Returns:
            An :class:`ImageIndex` to pass to :meth:`query` any number of times.
        """
        arr = load_image(image)
        settings = proposal_settings or self.proposal_settings
        if settings.max_proposals is None or settings.max_proposals > self.max_regions:
            settings = replace(settings, max_proposals=self.max_regions)
        progress = StageProgress.of(show_progress)
        t0 = time.perf_counter()
        with progress.stage("SAM encoder"):
            if embedding is None or tuple(embedding.original_size) != arr.shape[:2]:
                embedding = self.predictor.encode(arr)
        t1 = time.perf_counter()
        if isinstance(self.grounder, TextGrounder):  # SAM 3: its vision features, no proposals
            ids, fingerprint = self.model_ids, self.model_fingerprint
            return self.grounder.make_index(arr, embedding, settings, ids, fingerprint)
        with progress.stage("proposals", bar=False):  # generate_proposals shows its own bar
            proposals = generate_proposals(
                self.predictor, arr, settings, embedding=embedding, show_progress=progress.enabled
            )
        t2 = time.perf_counter()
        with progress.stage("CLIP regions", total=max(len(proposals), 1), unit="region"):
            frame = proposals.frame_masks()
            image_t = torch.from_numpy(arr).to(self.device).permute(2, 0, 1)
            with torch.inference_mode():
                if len(proposals):
                    regions = self.scorer.encode_regions(image_t, proposals.boxes, frame)
                else:
                    regions = torch.zeros(0, 1, device=self.device)
        t3 = time.perf_counter()
        index = ImageIndex(
            image=arr,
            embedding=embedding,
            proposals=proposals,
            region_embeddings=regions,
            frame_masks=frame,
            settings=settings,
            model_ids=self.model_ids,
            weights_fingerprint=self.model_fingerprint,
        )
        if self.prefetch_boxes and len(proposals):
            all_regions = torch.arange(len(proposals), device=proposals.boxes.device)
            region_box_masks(
                self.predictor, index, all_regions, self.refine, settings.points_per_batch
            )
        t4 = time.perf_counter()
        times = (t1 - t0, t2 - t1, t3 - t2, t4 - t3)
        logger.info(
            "Indexed %dx%d image: %d proposals (encoder %.2fs, proposals %.2fs, CLIP %.2fs, "
            "box decodes %.2fs)", *arr.shape[1::-1], len(proposals), *times,
        )  # fmt: skip
        return index

    # -- phrase-dependent -----------------------------------------------------------------

    @torch.inference_mode()
    def query(
        self,
        index: ImageIndex,
        prompt: str | Sequence[str] | None = None,
        options: QueryOptions | None = None,
        **knobs: Any,
    ) -> sv.Detections:
        """Answer a text prompt from an index (no image encoder, grid or CLIP image pass).

        Args:
            index: From :meth:`index`.
            prompt: A phrase, comma-separated phrases, or a list of phrases (None with
                ``exemplars`` only).
            options: The query's knobs (default :attr:`options`, the engine's defaults).
            **knobs: Changes to ``options``: any :class:`QueryOptions` field (``threshold``,
                ``top_k`` (None: no limit), ``refine``, ``min_region_area``, ``negative``,
                ``calibration``, ``keep_parts``, ``part_thresh``, ``exemplars``,
                ``exemplar_label``, ``points``, ``point_labels``; see there). Points mix
                text with clicks: a region is a candidate only if it contains a foreground
                point and no background point, and it is re-prompted with its box plus the
                points inside the box. Exemplars ("more like this", xyxy boxes) find regions
                that look like them (see :mod:`grounded_sam.grounding.exemplars`).

        Returns:
            ``sv.Detections`` with ``mask`` (N, H, W) bool, ``xyxy`` (tight box of each mask,
            original pixels), ``confidence`` (see class doc), ``class_id`` (index into the
            phrases, then the exemplar label), ``data`` with ``class_name``, ``clip_score``,
            ``sam_iou`` and ``proposal_index``, ``metadata`` (image width and height, the
            phrases, the SAM id and family and the CLIP id; see :mod:`grounded_sam.results`)
            and ``tracker_id`` None. Empty when nothing matches.

        Raises:
            TypeError: Not an index, or an unknown knob.
            ValueError: A bad prompt or knob (the message names it), or an index made with
                other models.
        """
        opts = self._options(options, knobs)
        if not isinstance(index, ImageIndex):
            raise TypeError(
                f"query() takes an ImageIndex from GroundedSAM.index(image), got "
                f"{type(index).__name__}; use segment(image, prompt) for a one-off."
            )
        index.check_fits(self.model_ids, self.model_fingerprint)
        index.check_models(self.predictor, getattr(self.scorer, "embed_dim", None))
        index = self._prepared(index)
        phrases = query_phrases(prompt, opts)
        opts.check_for_image(index.size)
        candidates = self.grounder.ground(index, phrases, opts)
        found = self.refiner.refine(index, candidates, opts)
        dets = grounded_detections(found, model_metadata(self.predictor, self.model_ids))
        dets.data.update(getattr(found.candidates, "detection_data", dict)())  # SAM 3's scores
        return dets

    def segment(
        self,
        image: ImageInput,
        prompt: str | Sequence[str] | None = None,
        options: QueryOptions | None = None,
        **knobs: Any,
    ) -> sv.Detections:
        """Index an image and answer one prompt: ``query(index(image), prompt, ...)``.

        A bad prompt or knob, a negative that is also a phrase, and points or exemplar boxes
        outside the image fail before the image is indexed.

        Args:
            image: A path, a PIL image, or an (H, W, 3) uint8 RGB array (for many images
                use :meth:`segment_many`).
            prompt: A phrase, comma-separated phrases, or a list of phrases (None with
                ``exemplars=`` only).
            options: As for :meth:`query`.
            **knobs: As for :meth:`query` (``negative``, ``exemplars``, ``calibration``,
                ``keep_parts``, ``threshold``, ...).

        Returns:
            Detections as in :meth:`query`.
        """
        if isinstance(image, (list, tuple)):
            raise TypeError(
                "segment() takes one image; for a list of images or a folder use "
                "segment_many(images, prompt), which yields (source, detections) pairs."
            )
        opts = self._options(options, knobs)
        phrases = query_phrases(prompt, opts)
        opts.negatives_for(phrases)
        if opts.per_image:  # a bad point or box fails before the expensive part
            image = load_image(image)
            opts.check_for_image(image.shape[:2])
        return self.query(self.index(image), phrases or None, opts)

    def index_many(
        self, images: ImageSources, *, show_progress: bool = True, **kwargs: Any
    ) -> Iterator[tuple[object, ImageIndex | Exception]]:
        """Index many images: see :func:`grounded_sam.batch.index_many`."""
        from grounded_sam.batch import index_many

        return index_many(self, images, show_progress=show_progress, **kwargs)

    def segment_many(
        self,
        images: ImageSources,
        prompt: str | Sequence[str] | None = None,
        *,
        batch_size: int | None = None,
        show_progress: bool = True,
        **kwargs: Any,
    ) -> Iterator[tuple[object, sv.Detections | Exception]]:
        """Segment many images: see :func:`grounded_sam.batch.segment_many`."""
        from grounded_sam.batch import segment_many

        return segment_many(
            self, images, prompt, batch_size=batch_size, show_progress=show_progress, **kwargs
        )

    def track(
        self, video: Any, prompt: str | Sequence[str], **kwargs: Any
    ) -> Iterator[tuple[int, sv.Detections]]:
        """Track phrases through a video: see :func:`grounded_sam.video.api.track`.

        Yields ``(frame_index, sv.Detections)`` with ``tracker_id`` set (``every=``,
        ``max_frames=``, ``propagator=``, ...); frames are streamed.
        """
        from grounded_sam.video.api import track

        return track(self, video, prompt, **kwargs)

    # -- SAM prompts and everything -----------------------------------------------------

    def predict(
        self,
        image: ImageInput | ImageIndex,
        points: object | None = None,
        labels: object | None = None,
        box: object | None = None,
        mask_input: object | None = None,
        multimask_output: bool = True,
    ) -> sv.Detections:
        """Segment with SAM's geometric prompts (points, box, point+box, previous mask).

        Args:
            image: An image, or an :class:`ImageIndex` (its kept embedding is reused).
            points: (N, 2) xy in original pixels.
            labels: (N,) 1 = foreground, 0 = background (default all foreground).
            box: (4,) xyxy in original pixels, or (B, 4) for B boxes decoded together.
            mask_input: (1, L, L) low-res logits from ``data["low_res_logits"]`` of an
                earlier result, to refine it.
            multimask_output: Three masks (whole / part / sub-part) per prompt instead of one.

        Returns:
            Detections, one per mask, ordered by prompt then granularity: ``confidence`` is
            SAM's predicted IoU; ``data`` has ``class_name`` ("prompt"), ``sam_iou``,
            ``clip_score`` (NaN), ``prompt_index``, ``granularity`` (0 whole .. 2 sub-part
            with multimask output) and ``low_res_logits`` ((N, L, L) float32); ``metadata``
            as for :meth:`query`, with the phrases ``["prompt"]``.
        """
        self._refuse("predict")
        embedding = self._prepared(image).embedding if isinstance(image, ImageIndex) else None
        source = embedding or self.predictor.encode(load_image(image))
        pred = self.predictor.predict(
            source,
            points=points,
            labels=labels,
            box=box,
            mask_input=mask_input,
            multimask_output=multimask_output,
        )
        return prompt_detections(pred, model_metadata(self.predictor, self.model_ids))

    def everything(
        self,
        image: ImageInput | ImageIndex,
        *,
        show_progress: bool | StageProgress = False,
        **settings: Any,
    ) -> sv.Detections:
        """SAM's automatic "segment everything" masks.

        Args:
            image: An image, or an :class:`ImageIndex` (its embedding is reused for crop 0).
            show_progress: Progress bars (SAM encoder, grid points) on stderr; a
                :class:`~grounded_sam.utils.progress.StageProgress` also collects stage times.
            **settings: Any :class:`EverythingSettings` field (``points_per_side``,
                ``pred_iou_thresh``, ``stability_score_thresh``, ``crop_n_layers``,
                ``crop_n_points_downscale_factor``, ``min_mask_region_area``, ...); defaults
                are Meta's (32×32 grid).

        Returns:
            Detections, one per mask by decreasing predicted IoU, class-agnostic
            (``class_id`` None): ``mask`` (N, H, W) bool, ``xyxy`` tight boxes (original
            pixels, x2/y2 exclusive), ``confidence`` = SAM's predicted IoU clipped to [0, 1];
            ``data``: ``predicted_iou`` (unclipped), ``stability_score``, ``point_coords``
            (N, 2) xy, ``crop_box`` (N, 4) xyxy of the crop each mask was decoded in,
            ``area`` (pixels); ``metadata`` as every result (``image_size``, ``phrases``
            = [], ``model_ids``; :func:`~grounded_sam.results.detection_metadata`). Meta's
            record dicts (``segmentation``, ``bbox`` XYWH, ...):
            :func:`grounded_sam.export.records.everything_records`.
        """
        self._refuse("everything")
        if "output_mode" in settings:
            raise TypeError(
                "everything() returns sv.Detections and has no output_mode: for Meta's "
                "records use grounded_sam.export.everything_records(dets, output_mode=...)."
            )
        try:
            cfg = EverythingSettings(**settings)
        except TypeError as exc:
            raise TypeError(f"Unknown everything() setting: {exc}") from exc
        progress = StageProgress.of(show_progress)
        if isinstance(image, ImageIndex):
            arr, embedding = image.image, self._prepared(image).embedding
        else:
            arr = load_image(image)
            with progress.stage("SAM encoder"):
                embedding = self.predictor.encode(arr)
        with progress.stage("proposals", bar=False):  # generate_proposals shows its own bar
            proposals = generate_proposals(
                self.predictor, arr, cfg, embedding=embedding, show_progress=progress.enabled
            )
        return proposals_to_detections(
            proposals,
            min_mask_region_area=cfg.min_mask_region_area,
            nms_thresh=max(cfg.box_nms_thresh, cfg.crop_nms_thresh),
            metadata=detection_metadata(
                arr.shape[:2], [], model_metadata(self.predictor, self.model_ids)
            ),
        )

    def load_index(self, path: str | os.PathLike) -> ImageIndex:
        """Read an index saved with :meth:`ImageIndex.save`, ready for this engine's queries.

        The same as ``ImageIndex.load(path, self.device, predictor=self.predictor,
        region_width=self.scorer.embed_dim)``: every field is checked against this engine's
        models, and the decoder's per-image context (never saved) is rebuilt once here, not on
        every query.

        Args:
            path: The ``.gsindex`` file.

        Returns:
            The index.

        Raises:
            FileNotFoundError: No such file.
            ValueError: Not an index file, or one that does not fit this engine's models.
        """
        width = getattr(self.scorer, "embed_dim", None)
        index = ImageIndex.load(path, self.device, predictor=self.predictor, region_width=width)
        index.check_fits(self.model_ids, self.model_fingerprint)
        return index

    # -- helpers ----------------------------------------------------------------------------

    def _refuse(self, operation: str) -> None:
        """Raise ValueError when this engine's grounder says it cannot run ``operation``."""
        grounder = self.grounder
        refusal = grounder.refusal(operation) if isinstance(grounder, TextGrounder) else None
        if refusal is not None:
            raise ValueError(refusal)

    def _prepared(self, index: ImageIndex) -> ImageIndex:
        """``index`` with this model's decoder context on its embedding (built if missing).

        An index read by plain ``ImageIndex.load`` carries none: it is built once for this
        call (and shared by all of its decodes) instead of once per decode; the box cache is
        shared, as the embedding's tensors are.
        """
        prepare = getattr(self.predictor, "prepare", None)
        if prepare is None:
            return index
        embedding = prepare(index.embedding)
        return index if embedding is index.embedding else replace(index, embedding=embedding)

    def _options(self, options: QueryOptions | None, knobs: dict[str, Any]) -> QueryOptions:
        """``options`` (default :attr:`options`) with ``knobs`` changed, validated once."""
        if options is not None and not isinstance(options, QueryOptions):
            raise TypeError(f"options must be a QueryOptions, got {type(options).__name__}.")
        return (options or self.options).replace(**knobs)
