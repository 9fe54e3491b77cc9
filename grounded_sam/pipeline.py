"""GroundedSAM: a phrase in, labeled instance masks out.

The expensive, phrase-independent work (SAM image encoder, grid proposals, CLIP region
embeddings) is done once per image by :meth:`GroundedSAM.index`. Each phrase is then answered
by :meth:`GroundedSAM.query` with a text encode, a matrix product, and one batched SAM decoder
call on the kept embedding.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np
import supervision as sv
import torch

from grounded_sam.clip.loading import DEFAULT_CLIP
from grounded_sam.device import resolve_device, resolve_dtype
from grounded_sam.grounding.boxes import region_box_masks
from grounded_sam.grounding.candidates import parse_negatives, score_candidates
from grounded_sam.grounding.clicks import (
    decode_boxes_with_clicks,
    honours_clicks,
    keep_clicked_proposals,
    proposals_honouring_clicks,
)
from grounded_sam.grounding.dedup import (
    DEFAULT_PART_THRESH,
    decode_until_distinct,
    deduplicate,
)
from grounded_sam.grounding.exemplars import check_exemplars, embed_exemplars, exemplar_scores
from grounded_sam.grounding.index import ImageIndex, weights_fingerprint
from grounded_sam.grounding.scoring import (
    DEFAULT_BACKGROUND_PHRASES,
    check_calibration,
    similarity,
)
from grounded_sam.grounding.selection import Selection, select_regions
from grounded_sam.inputs import (
    ImageInput,
    as_points,
    check_int,
    check_query_knobs,
    load_image,
    parse_prompt,
)
from grounded_sam.results import empty_detections, make_detections
from grounded_sam.sam.everything import (
    EverythingSettings,
    generate_proposals,
    proposals_to_records,
)
from grounded_sam.sam.loading import DEFAULT_SAM
from grounded_sam.sam.predictor import ImageEmbedding, SamPredictor
from grounded_sam.utils.masks import clean_small_regions, masks_to_boxes
from grounded_sam.utils.progress import StageProgress

if TYPE_CHECKING:
    from grounded_sam.batch import ImageSources

__all__ = ["GroundedSAM", "RegionScorer", "DEFAULT_CLIP", "DEFAULT_SAM"]

logger = logging.getLogger(__name__)


#: Proposal settings used by :meth:`GroundedSAM.index` unless overridden: Meta's defaults
#: with a 16×16 grid (256 prompts), which covers objects down to ~1/16 of the image side.
DEFAULT_INDEX_SETTINGS = EverythingSettings(points_per_side=16, points_per_batch=64)


class RegionScorer(Protocol):
    """What the pipeline needs from a region/text scorer (CLIP, or a stand-in in tests)."""

    logit_scale: float

    def encode_text(self, phrases: list[str]) -> torch.Tensor:
        """(P, D) L2-normalised phrase embeddings."""
        ...

    def encode_regions(
        self, image: torch.Tensor, boxes: torch.Tensor, masks: torch.Tensor | None
    ) -> torch.Tensor:
        """(N, D) L2-normalised region embeddings (see ClipScorer.encode_regions)."""
        ...


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
    """

    def __init__(
        self,
        predictor: SamPredictor,
        scorer: RegionScorer,
        *,
        proposal_settings: EverythingSettings = DEFAULT_INDEX_SETTINGS,
        max_regions: int = 100,
        threshold: float = 0.3,
        top_k: int | None = 20,
        refine: int = 1,
        mask_nms_thresh: float = 0.5,
        background_phrases: Sequence[str] = DEFAULT_BACKGROUND_PHRASES,
        model_ids: tuple[str, str] = ("", ""),
        prefetch_boxes: bool = True,
    ) -> None:
        threshold, top_k, refine, _ = check_query_knobs(threshold, top_k, refine, 0)
        max_regions = check_int("max_regions", max_regions, 1)
        self.predictor = predictor
        self.scorer = scorer
        self.proposal_settings = proposal_settings
        self.max_regions = max_regions
        self.threshold = threshold
        self.top_k = top_k
        self.refine = refine
        self.mask_nms_thresh = mask_nms_thresh
        self.background_phrases = list(background_phrases)
        self.model_ids = model_ids
        self.prefetch_boxes = prefetch_boxes

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
                folder.
            clip: open_clip ``"name:pretrained"`` tag, ``"hf-hub:org/repo"``,
                ``"local-dir:/path"`` or a local folder.
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
        from grounded_sam.sam.loading import sam_hub_model

        dev = resolve_device(device)
        dt = resolve_dtype(dtype, dev)
        # Both models are checked before either loads: one error names every missing one.
        with hub_session([sam_hub_model(sam), clip_hub_model(clip)]):
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
        progress = _stage_progress(show_progress)
        t0 = time.perf_counter()
        with progress.stage("SAM encoder"):
            if embedding is None or tuple(embedding.original_size) != arr.shape[:2]:
                embedding = self.predictor.encode(arr)
        t1 = time.perf_counter()
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
        logger.info(
            "Indexed %dx%d image: %d proposals (encoder %.2fs, proposals %.2fs, CLIP %.2fs, "
            "box decodes %.2fs)",
            arr.shape[1],
            arr.shape[0],
            len(proposals),
            t1 - t0,
            t2 - t1,
            t3 - t2,
            t4 - t3,
        )
        return index

    # -- phrase-dependent -----------------------------------------------------------------

    @torch.inference_mode()
    def query(
        self,
        index: ImageIndex,
        prompt: str | Sequence[str] | None = None,
        *,
        threshold: float | None = None,
        top_k: int | None | Literal["default"] = "default",
        refine: int | None = None,
        points: object | None = None,
        point_labels: object | None = None,
        min_region_area: int = 0,
        negative: str | Sequence[str] | None = None,
        exemplars: object | None = None,
        exemplar_label: str = "exemplar",
        calibration: Literal["joint", "per_phrase"] = "joint",
        keep_parts: bool = False,
        part_thresh: float = DEFAULT_PART_THRESH,
    ) -> sv.Detections:
        """Answer a text prompt from an index (no image encoder, grid or CLIP image pass).

        Args:
            index: From :meth:`index`.
            prompt: A phrase, comma-separated phrases, or a list of phrases (None with
                ``exemplars`` only).
            threshold: Minimum confidence in [0, 1] (default :attr:`threshold`).
            top_k: Maximum detections per phrase, counted after all de-duplication (None for
                no limit; default :attr:`top_k`).
            refine: Extra refinement passes (default :attr:`refine`).
            points: Optional (N, 2) xy points (original pixels) to mix text with clicks: a
                region is a candidate only if it contains at least one foreground point and
                no background point; each chosen region is re-prompted with its box plus the
                points inside the box, and a final mask that misses its clicks is dropped.
            point_labels: (N,) 1 foreground / 0 background for ``points`` (default all 1).
            min_region_area: Remove islands and fill holes smaller than this many pixels
                in the final masks (0: off).
            negative: Phrases that must not be returned (``"handle, saucer"``): they compete
                with the phrases in scoring like the background phrases, and a region whose
                best match is a negative phrase is never returned.
            exemplars: "More like this": one xyxy box or a list of boxes (original pixels)
                around example objects; regions that look like them (CLIP image similarity,
                see :mod:`grounded_sam.grounding.exemplars`) are returned as
                ``exemplar_label``. Alone or with ``prompt``.
            exemplar_label: Class name of exemplar matches.
            calibration: ``"joint"``: one softmax over the phrases, negatives and background
                phrases (a phrase's confidence drops when a similar phrase is added);
                ``"per_phrase"``: each phrase against the negatives and background only
                (independent of the other phrases). The label is the best phrase in both.
            keep_parts: Keep masks that are parts of a larger mask with the same label.
            part_thresh: A mask with more than this fraction of its pixels inside a larger
                same-label mask is a part (dropped unless ``keep_parts``).

        Returns:
            ``sv.Detections`` with ``mask`` (N, H, W) bool, ``xyxy`` (tight box of each mask,
            original pixels), ``confidence`` (see class doc), ``class_id`` (index into the
            phrases, then the exemplar label) and ``data`` with ``class_name``,
            ``clip_score``, ``sam_iou`` and ``proposal_index``. Empty when nothing matches.
        """
        if not isinstance(index, ImageIndex):
            raise TypeError(
                f"query() takes an ImageIndex from GroundedSAM.index(image), got "
                f"{type(index).__name__}; use segment(image, prompt) for a one-off."
            )
        index.check_fits(self.model_ids, self.model_fingerprint)
        if prompt is None and exemplars is None:
            raise ValueError(_NO_PROMPT)
        phrases = [] if prompt is None else parse_prompt(prompt)
        negatives = parse_negatives(negative, phrases)
        threshold, top_k, refine, min_region_area = check_query_knobs(
            self.threshold if threshold is None else threshold,
            self.top_k if isinstance(top_k, str) and top_k == "default" else top_k,
            self.refine if refine is None else refine,
            min_region_area,
        )
        check_calibration(calibration)
        ex_boxes = None if exemplars is None else check_exemplars(exemplars, index.size)
        labels = phrases + ([exemplar_label] if ex_boxes is not None else [])
        if len(index) == 0:
            return _with_phrases(empty_detections(index.size))
        allowed = clicks = None
        if points is not None:
            pts, lab = as_points(points, point_labels, index.size)
            clicks = torch.from_numpy(pts), torch.from_numpy(lab)
            allowed = proposals_honouring_clicks(index.frame_masks, *clicks, index.size)
        text = self.scorer.encode_text(phrases + negatives + self.background_phrases).to(
            index.region_embeddings.device
        )
        cosine = similarity(index.region_embeddings, text)
        logit_scale = float(self.scorer.logit_scale)
        clip_cos = cosine[:, : len(phrases)]
        ex_score = None
        if ex_boxes is not None:
            ex_emb = embed_exemplars(self.predictor, self.scorer, index, ex_boxes)
            ex_score, ex_cos = exemplar_scores(index.region_embeddings, ex_emb, logit_scale)
            clip_cos = torch.cat([clip_cos, ex_cos[:, None]], dim=1)
        scores, rejected = score_candidates(
            cosine, len(phrases), len(negatives), logit_scale, calibration, ex_score
        )
        allowed = ~rejected if allowed is None else allowed & ~rejected
        chosen = select_regions(scores, threshold, None, allowed)
        if len(chosen) == 0:
            return _with_phrases(empty_detections(index.size))
        # All tensors below live on the model's device. Candidates are re-prompted (box, plus
        # the clicks inside it) in rounds until top_k distinct objects per phrase are found;
        # empty masks, parts and duplicates are removed at the decoder's resolution, and only
        # the survivors are upscaled.
        vh, vw = self.predictor.transform.low_res_valid_size(index.embedding.input_size)
        low_clicks = None  # the clicks in the low-res frame
        if clicks is not None:
            to_low_res = torch.tensor([vw / index.size[1], vh / index.size[0]])
            low_clicks = clicks[0] * to_low_res, clicks[1]
        decoded: dict[str, torch.Tensor] = {}

        def decode(rows: torch.Tensor) -> None:
            logits, iou = self._reprompt(index, chosen.take(rows), refine, clicks, low_clicks)
            if not decoded:
                decoded["low_res"] = logits.new_zeros(len(chosen), *logits.shape[1:])
                decoded["iou"] = iou.new_zeros(len(chosen))
            decoded["low_res"][rows], decoded["iou"][rows] = logits, iou

        def distinct(rows: torch.Tensor) -> torch.Tensor:
            small = decoded["low_res"][rows][:, :vh, :vw] > self.predictor.mask_threshold
            kept = deduplicate(small, chosen.take(rows), self.mask_nms_thresh, keep_parts,
                               part_thresh, low_clicks)  # fmt: skip
            return rows[kept]

        keep = decode_until_distinct(chosen, top_k, decode, distinct)
        low_res, sam_iou = decoded["low_res"], decoded["iou"]
        chosen, sam_iou = chosen.take(keep), sam_iou[keep]
        masks = _upscale_binary(self.predictor, index, low_res[keep])
        if min_region_area > 0:
            masks = _clean_masks(masks, min_region_area)
        filled = masks.flatten(1).any(1)
        if clicks is not None:
            filled &= honours_clicks(masks, *clicks).to(filled.device)
        masks, sam_iou, chosen = masks[filled], sam_iou[filled], chosen.take(filled)
        score, phrase, region = chosen.score, chosen.phrase, chosen.region
        clip_score = clip_cos[region, phrase]
        return make_detections(
            masks=masks.cpu().numpy(),
            xyxy=_tight_boxes(masks).cpu().numpy(),
            confidence=score.cpu().numpy(),
            class_id=phrase.cpu().numpy(),
            phrases=labels,
            clip_score=clip_score.cpu().numpy(),
            sam_iou=sam_iou.cpu().numpy(),
            proposal_index=region.cpu().numpy(),
        )

    def segment(
        self, image: ImageInput, prompt: str | Sequence[str] | None = None, **kwargs: Any
    ) -> sv.Detections:
        """Index an image and answer one prompt: ``query(index(image), prompt)``.

        Args:
            image: A path, a PIL image, or an (H, W, 3) uint8 RGB array (for many images
                use :meth:`segment_many`).
            prompt: A phrase, comma-separated phrases, or a list of phrases (None with
                ``exemplars=`` only).
            **kwargs: Passed to :meth:`query` (``negative``, ``exemplars``, ``calibration``,
                ``keep_parts``, ``threshold``, ...).

        Returns:
            Detections as in :meth:`query`.
        """
        if isinstance(image, (list, tuple)):
            raise TypeError(
                "segment() takes one image; for a list of images or a folder use "
                "segment_many(images, prompt), which yields (source, detections) pairs."
            )
        # fail on a bad prompt before the expensive part
        if prompt is None and kwargs.get("exemplars") is None:
            raise ValueError(_NO_PROMPT)
        phrases = None if prompt is None else parse_prompt(prompt)
        parse_negatives(kwargs.get("negative"), phrases or [])
        check_calibration(kwargs.get("calibration", "joint"))
        if kwargs.get("exemplars") is not None:  # a bad box fails before the expensive part
            image = load_image(image)
            check_exemplars(kwargs["exemplars"], image.shape[:2])
        return self.query(self.index(image), phrases, **kwargs)

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
            with multimask output) and ``low_res_logits`` ((N, L, L) float32).
        """
        embedding = image.embedding if isinstance(image, ImageIndex) else None
        source = embedding or self.predictor.encode(load_image(image))
        pred = self.predictor.predict(
            source,
            points=points,
            labels=labels,
            box=box,
            mask_input=mask_input,
            multimask_output=multimask_output,
        )
        masks = pred.masks.reshape(-1, *pred.masks.shape[-2:])
        iou = pred.iou_predictions.reshape(-1)
        logits = pred.low_res_logits.reshape(-1, *pred.low_res_logits.shape[-2:])
        n_gran = pred.iou_predictions.shape[-1]
        prompt_index = np.repeat(np.arange(len(iou) // n_gran), n_gran)
        granularity = np.tile(np.arange(n_gran), len(iou) // n_gran)
        return make_detections(
            masks=masks,
            xyxy=_tight_boxes(torch.from_numpy(masks)).numpy(),
            confidence=np.clip(iou, 0.0, 1.0),
            class_id=np.zeros(len(iou), dtype=int),
            phrases=["prompt"],
            clip_score=np.full(len(iou), np.nan, dtype=np.float32),
            sam_iou=iou,
            prompt_index=prompt_index,
            granularity=granularity,
            low_res_logits=logits.astype(np.float32),
        )

    def everything(
        self,
        image: ImageInput | ImageIndex,
        *,
        output_mode: Literal["binary_mask", "coco_rle"] = "binary_mask",
        show_progress: bool | StageProgress = False,
        **settings: Any,
    ) -> list[dict[str, Any]]:
        """SAM's automatic "segment everything" masks.

        Args:
            image: An image, or an :class:`ImageIndex` (its embedding is reused for crop 0).
            output_mode: ``"binary_mask"`` (H×W bool arrays) or ``"coco_rle"``.
            show_progress: Progress bars (SAM encoder, grid points) on stderr; a
                :class:`~grounded_sam.utils.progress.StageProgress` also collects stage times.
            **settings: Any :class:`EverythingSettings` field (``points_per_side``,
                ``pred_iou_thresh``, ``stability_score_thresh``, ``crop_n_layers``,
                ``crop_n_points_downscale_factor``, ``min_mask_region_area``, ...); defaults
                are Meta's (32×32 grid).

        Returns:
            One record per mask with ``segmentation``, ``area``, ``bbox`` (xywh),
            ``predicted_iou``, ``stability_score``, ``point_coords`` and ``crop_box`` (xywh).
        """
        try:
            cfg = EverythingSettings(**settings)
        except TypeError as exc:
            raise TypeError(f"Unknown everything() setting: {exc}") from exc
        progress = _stage_progress(show_progress)
        if isinstance(image, ImageIndex):
            arr, embedding = image.image, image.embedding
        else:
            arr = load_image(image)
            with progress.stage("SAM encoder"):
                embedding = self.predictor.encode(arr)
        with progress.stage("proposals", bar=False):  # generate_proposals shows its own bar
            proposals = generate_proposals(
                self.predictor, arr, cfg, embedding=embedding, show_progress=progress.enabled
            )
        return proposals_to_records(
            proposals,
            output_mode=output_mode,
            min_mask_region_area=cfg.min_mask_region_area,
            nms_thresh=max(cfg.box_nms_thresh, cfg.crop_nms_thresh),
        )

    # -- helpers ----------------------------------------------------------------------------

    def _reprompt(
        self,
        index: ImageIndex,
        chosen: Selection,
        refine: int,
        clicks: tuple[torch.Tensor, torch.Tensor] | None,
        low_clicks: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Box re-prompt of chosen regions, with the clicks inside each box when given.

        ``clicks``: ``(points (K, 2) original pixels, labels (K,))``; ``low_clicks``: the same
        clicks scaled to the low-res frame.

        Returns:
            ``(low_res_logits (M, L, L), iou (M,))``.
        """
        if clicks is None:  # decoded once per region, kept in the index
            return region_box_masks(
                self.predictor, index, chosen.region, refine,
                self.proposal_settings.points_per_batch,
            )  # fmt: skip
        boxes = index.proposals.boxes[chosen.region]
        chunk = self.proposal_settings.points_per_batch
        low_res, iou = decode_boxes_with_clicks(
            self.predictor, index.embedding, boxes, *clicks, refine, chunk
        )
        vh, vw = self.predictor.transform.low_res_valid_size(index.embedding.input_size)
        props = index.proposals
        low_res = keep_clicked_proposals(
            low_res,
            props.low_res_logits[chosen.region],
            props.crop_index[chosen.region] == 0,
            *low_clicks,
            (vh, vw),
            self.predictor.mask_threshold,
        )
        return low_res, iou


_NO_PROMPT = (
    "Nothing to look for: give a prompt such as 'dog, cat', exemplars=[[x1, y1, x2, y2]] "
    "around an example object, or both."
)


def _with_phrases(dets: sv.Detections) -> sv.Detections:
    dets.data["proposal_index"] = np.zeros(0, dtype=int)
    return dets


def _tight_boxes(masks: torch.Tensor) -> torch.Tensor:
    """(N, 4) float xyxy boxes around masks, x2/y2 exclusive (pixel edges)."""
    boxes = masks_to_boxes(masks).float()
    nonempty = masks.flatten(1).any(1) if masks.numel() else torch.zeros(0, dtype=torch.bool)
    boxes[:, 2:] += nonempty[:, None].float()
    return boxes


def _upscale_binary(
    predictor: SamPredictor, index: ImageIndex, low_res: torch.Tensor
) -> torch.Tensor:
    """(M, L, L) logits -> (M, H, W) bool masks, upscaled one at a time.

    The float logits of all M masks at full resolution would be 4x the masks themselves
    (gigabytes on large images).
    """
    h, w = index.size
    out = torch.empty((low_res.shape[0], h, w), dtype=torch.bool, device=low_res.device)
    for i in range(low_res.shape[0]):
        full = predictor.upscale(index.embedding, low_res[i : i + 1, None])[0, 0]
        out[i] = full > predictor.mask_threshold
    return out


def _clean_masks(masks: torch.Tensor, area: int) -> torch.Tensor:
    arr = masks.cpu().numpy()
    for i in range(len(arr)):
        arr[i], _ = clean_small_regions(arr[i], area)
    return torch.from_numpy(arr).to(masks.device)


def _stage_progress(show_progress: bool | StageProgress) -> StageProgress:
    """The caller's :class:`StageProgress`, or a new one shown when ``show_progress``."""
    if isinstance(show_progress, StageProgress):
        return show_progress
    return StageProgress(enabled=bool(show_progress))
