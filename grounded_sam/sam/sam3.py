"""SAM 3: vision features kept once per image, its text-conditioned detector run on them.

The model is transformers' ``Sam3Model`` with its ``Sam3Processor``.

SAM 3 finds every instance of a phrase itself: a ViT image encoder with an FPN neck (the
phrase-independent part, :meth:`Sam3Backend.encode`), a CLIP text encoder (cached per phrase,
:meth:`Sam3Backend.text_prompts`), an optional box-exemplar encoder
(:meth:`Sam3Backend.box_prompt`), and the text-conditioned part: a DETR encoder that fuses the
prompt into the image tokens, a DETR decoder with ``num_queries`` object queries and a
presence token, a dot-product scorer and a mask decoder (:meth:`Sam3Backend.detect`,
:meth:`Sam3Backend.mask_logits`). It is split here exactly as ``Sam3Model.forward`` runs it,
with the same submodules and the same arithmetic, so that the vision part runs once per image
and the text part once per batch of prompts:

* a query's score is ``sigmoid(query logit) * sigmoid(presence logit)`` (the presence token
  says whether the phrase is in the image at all; the query logit, whether this query is an
  instance of it), as ``Sam3Processor.post_process_instance_segmentation`` combines them;
* boxes come out normalised xyxy (fractions of the image width and height);
* masks come out as logits on the finest FPN level (``image_size / 14 * 4`` square, 288 for the
  released 1008-pixel model), stretched over the whole image: the processor resizes the image
  to the square input without keeping its aspect ratio, and the post-processing brings the
  sigmoid of the logits back to (H, W) bilinearly and keeps pixels above 0.5.

The kept :class:`~grounded_sam.sam.types.ImageEmbedding` carries the FPN level the DETR
encoder reads (``embeddings``, (1, C, E, E)) and the two finer levels the mask decoder needs
(``features``, (1, C, 4E, 4E) and (1, C, 2E, 2E)); their sine position encodings depend only on
the shapes and are recomputed, never stored.

Thread safety: the back-end holds the model, the processor and a bounded, lock-guarded cache
of phrase features; embeddings and the values :meth:`detect` returns are frozen. Any number of
threads may encode and detect at once.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from grounded_sam.errors import ModelLoadError
from grounded_sam.sam import families
from grounded_sam.sam.transforms import Sam2Transform
from grounded_sam.sam.types import ImageEmbedding

__all__ = [
    "MASK_THRESHOLD",
    "TEXT_LENGTH",
    "VISUAL_PROMPT",
    "Sam3Backend",
    "Sam3Detections",
    "Sam3Prompts",
    "load_sam3",
]

logger = logging.getLogger(__name__)

#: Tokens per phrase, as ``Sam3Processor`` pads them (the text encoder's 32 positions).
TEXT_LENGTH = 32
#: A mask pixel is kept when the sigmoid of its logit is above this (the processor's default).
MASK_THRESHOLD = 0.5
#: The text of a prompt made of exemplar boxes only, as ``Sam3Processor`` fills it in.
VISUAL_PROMPT = "visual"
#: Phrases whose text features are kept (about 32 KB each at the released size).
TEXT_CACHE_SIZE = 4096


@dataclass(frozen=True, eq=False)
class Sam3Prompts:
    """Prompt tokens for the detector: B prompts (text, plus exemplar boxes when given).

    Attributes:
        features: (B, T, D) prompt tokens in the detector's width (text projected; exemplar
            tokens appended after the text's).
        mask: (B, T) bool, True for real tokens (False: padding).
    """

    features: torch.Tensor
    mask: torch.Tensor

    def __len__(self) -> int:
        return int(self.features.shape[0])


@dataclass(frozen=True, eq=False)
class Sam3Detections:
    """The text-conditioned detector's raw output for B prompts on one image.

    Attributes:
        logits: (B, Q) float32 query logits (Q = ``num_queries``).
        presence_logits: (B, 1) float32 presence logit of each prompt.
        boxes: (B, Q, 4) float32 boxes, normalised xyxy (fractions of width / height).
        queries: (B, Q, D) the last decoder layer's query states (for the mask decoder).
        encoder_states: (B, N, D) the DETR encoder's prompt-fused image tokens.
        prompts: The prompts (the mask decoder attends to them too).
    """

    logits: torch.Tensor
    presence_logits: torch.Tensor
    boxes: torch.Tensor
    queries: torch.Tensor
    encoder_states: torch.Tensor
    prompts: Sam3Prompts

    @property
    def scores(self) -> torch.Tensor:
        """(B, Q) ``sigmoid(logits) * sigmoid(presence)``: SAM 3's detection score."""
        return self.logits.sigmoid() * self.presence_logits.sigmoid()


class _TextCache:
    """Bounded LRU of per-phrase text tokens (features (T, D), mask (T,)), lock-guarded."""

    def __init__(self, size: int) -> None:
        self._lock = threading.Lock()
        self._size = size
        self._items: OrderedDict[str, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()

    def get(self, phrase: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        with self._lock:
            hit = self._items.get(phrase)
            if hit is not None:
                self._items.move_to_end(phrase)
            return hit

    def put(self, phrase: str, value: tuple[torch.Tensor, torch.Tensor]) -> None:
        with self._lock:
            self._items[phrase] = value
            self._items.move_to_end(phrase)
            while len(self._items) > self._size:
                self._items.popitem(last=False)


class Sam3Backend:
    """Drives a ``Sam3Model``: vision features once per image, the detector per prompt batch.

    Args:
        model: A loaded ``transformers.Sam3Model`` in eval mode.
        processor: Its ``transformers.Sam3Processor`` (image resize and normalisation, CLIP
            tokenizer).

    Attributes:
        model, processor: As given.
        family: The registry record (:data:`grounded_sam.sam.families.SAM3`).
        transform: The square input frame (the image is stretched to it, as SAM 2's).
        device, dtype: Of the model.
        mask_threshold: Probability above which a mask pixel is kept.
    """

    FAMILY = "sam3"

    def __init__(self, model: Any, processor: Any) -> None:
        self.model = model
        self.processor = processor
        self.family = families.SAM3
        side = int(model.config.vision_config.backbone_config.image_size)
        self.transform = Sam2Transform(side)
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        self.mask_threshold = MASK_THRESHOLD
        self._text = _TextCache(TEXT_CACHE_SIZE)

    # -- geometry ---------------------------------------------------------------------------

    def encoder_shapes(self) -> tuple[tuple[int, ...], tuple[tuple[int, ...], ...]]:
        """What :meth:`encode` gives: ``((1, C, E, E), ((1, C, 4E, 4E), (1, C, 2E, 2E)))``."""
        cfg = self.model.config.vision_config
        side = int(cfg.backbone_config.image_size) // int(cfg.backbone_config.patch_size)
        c = int(cfg.fpn_hidden_size)
        return (1, c, side, side), ((1, c, 4 * side, 4 * side), (1, c, 2 * side, 2 * side))

    def prepare(self, embedding: ImageEmbedding) -> ImageEmbedding:
        """The embedding as it is: SAM 3 keeps no prompt-independent decoder context."""
        return embedding

    # -- vision (once per image) -------------------------------------------------------------

    def pixels(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """(H, W, 3) uint8 RGB images -> (B, 3, S, S) pixels, by the checkpoint's processor."""
        out = self.processor.image_processor(images=list(images), return_tensors="pt")
        return out["pixel_values"].to(self.device, self.dtype)

    @torch.inference_mode()
    def encode_batch(self, images: list[np.ndarray]) -> list[ImageEmbedding]:
        """One vision-encoder call for several images (sizes may differ); one embedding each.

        Args:
            images: (H, W, 3) uint8 RGB arrays.

        Returns:
            Per image: ``embeddings`` (1, C, E, E) the DETR encoder's FPN level, ``features``
            the two finer levels, ``input_size`` (S, S), all in the model's dtype and device.
        """
        if not images:
            return []
        out = self.model.vision_encoder(self.pixels(images))
        levels = out.fpn_hidden_states[:3]  # the 0.5x level is never read by the detector
        side = self.transform.target_length
        return [
            ImageEmbedding(
                embeddings=levels[2][i : i + 1].clone(),
                original_size=(int(img.shape[0]), int(img.shape[1])),
                input_size=(side, side),
                features=(levels[0][i : i + 1].clone(), levels[1][i : i + 1].clone()),
            )
            for i, img in enumerate(images)
        ]

    def encode(self, image: np.ndarray) -> ImageEmbedding:
        """:meth:`encode_batch` of one image."""
        return self.encode_batch([image])[0]

    def _levels(self, embedding: ImageEmbedding) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The three FPN levels (fine to coarse) and their sine position encodings."""
        if len(embedding.features) != 2:
            raise ValueError(
                f"A SAM 3 embedding carries 2 extra FPN levels, this one {len(embedding.features)}"
                ": it was made by another model; index the image again with this engine."
            )
        levels = [embedding.features[0], embedding.features[1], embedding.embeddings]
        levels = [t.to(self.device, self.dtype) for t in levels]
        encode = self.model.vision_encoder.neck.position_encoding
        return levels, [encode(t.shape, t.device, t.dtype) for t in levels]

    # -- prompts ------------------------------------------------------------------------------

    @torch.inference_mode()
    def text_prompts(self, phrases: Sequence[str]) -> Sam3Prompts:
        """Text tokens of phrases (tokenized as ``Sam3Processor`` does; cached per phrase).

        Args:
            phrases: P phrases.

        Returns:
            Prompts with ``features`` (P, 32, D) and ``mask`` (P, 32).
        """
        missing = [p for p in dict.fromkeys(phrases) if self._text.get(p) is None]
        if missing:
            tokens = self.processor.tokenizer(
                missing,
                return_tensors="pt",
                padding="max_length",
                max_length=TEXT_LENGTH,
                truncation=True,
            )
            ids = tokens["input_ids"].to(self.device)
            mask = tokens["attention_mask"].to(self.device)
            feats = self.model.get_text_features(input_ids=ids, attention_mask=mask).pooler_output
            for i, phrase in enumerate(missing):
                self._text.put(phrase, (feats[i].clone(), mask[i].bool().clone()))
        got = [self._text.get(p) or self._text_now(p) for p in phrases]
        return Sam3Prompts(torch.stack([g[0] for g in got]), torch.stack([g[1] for g in got]))

    def _text_now(self, phrase: str) -> tuple[torch.Tensor, torch.Tensor]:
        """A phrase evicted between encoding and reading (a full cache under many threads)."""
        prompts = self.text_prompts([phrase])
        return prompts.features[0], prompts.mask[0]

    @torch.inference_mode()
    def box_prompt(
        self,
        embedding: ImageEmbedding,
        boxes: torch.Tensor,
        labels: torch.Tensor | None = None,
        text: str = VISUAL_PROMPT,
    ) -> Sam3Prompts:
        """One prompt of exemplar boxes (SAM 3's geometry encoder), after ``text``'s tokens.

        Args:
            embedding: The image's embedding (boxes pool its features).
            boxes: (N, 4) xyxy in original pixels.
            labels: (N,) 1 = positive exemplar, 0 = negative (None: all positive).
            text: The prompt's text; ``"visual"`` is what ``Sam3Processor`` uses for boxes
                without text.

        Returns:
            Prompts with B = 1: the text's 32 tokens, then the boxes' and a CLS token.
        """
        h, w = embedding.original_size
        scale = torch.tensor([w, h, w, h], dtype=torch.float32, device=boxes.device)
        xyxy = (boxes.float() / scale).to(self.device)
        cxcywh = torch.stack(
            [
                (xyxy[:, 0] + xyxy[:, 2]) / 2,
                (xyxy[:, 1] + xyxy[:, 3]) / 2,
                xyxy[:, 2] - xyxy[:, 0],
                xyxy[:, 3] - xyxy[:, 1],
            ],
            dim=-1,
        )[None]
        n = cxcywh.shape[1]
        if labels is None:
            labels = torch.ones(n, dtype=torch.long)
        levels, pos = self._levels(embedding)
        geo = self.model.geometry_encoder(
            box_embeddings=cxcywh.to(self.dtype),
            box_mask=torch.ones(1, n, dtype=torch.bool, device=self.device),
            box_labels=labels.to(self.device, torch.long)[None],
            img_feats=tuple(levels),
            img_pos_embeds=tuple(pos),
        )
        text_prompt = self.text_prompts([text])
        return Sam3Prompts(
            torch.cat([text_prompt.features, geo.last_hidden_state], dim=1),
            torch.cat([text_prompt.mask, geo.attention_mask.bool()], dim=1),
        )

    # -- the text-conditioned part ----------------------------------------------------------

    @torch.inference_mode()
    def detect(self, embedding: ImageEmbedding, prompts: Sam3Prompts) -> Sam3Detections:
        """DETR encoder, decoder and scorer for B prompts on one image, in one batched pass.

        The image's levels are broadcast to the B prompts (views, no copies); the arithmetic
        is ``Sam3Model.forward``'s up to the mask decoder.

        Args:
            embedding: From :meth:`encode`.
            prompts: B prompts (:meth:`text_prompts`, :meth:`box_prompt`).

        Returns:
            The raw detections (no threshold applied).
        """
        m = self.model
        levels, pos = self._levels(embedding)
        b = len(prompts)
        feats = prompts.features.to(self.device, self.dtype)
        mask = prompts.mask.to(self.device)
        enc = m.detr_encoder(
            vision_features=[levels[2].expand(b, -1, -1, -1)],
            text_features=feats,
            vision_pos_embeds=[pos[2].expand(b, -1, -1, -1)],
            text_mask=mask,
        )
        dec = m.detr_decoder(
            vision_features=enc.last_hidden_state,
            text_features=enc.text_features,
            vision_pos_encoding=enc.pos_embeds_flattened,
            text_mask=mask,
            spatial_shapes=enc.spatial_shapes,
        )
        from transformers.models.sam3.modeling_sam3 import box_cxcywh_to_xyxy, inverse_sigmoid

        hidden = dec.intermediate_hidden_states[-1:]  # (1, B, Q, D): the last layer only
        offsets = m.detr_decoder.box_head(hidden)[0]
        ref = inverse_sigmoid(dec.reference_boxes[-1])
        boxes = box_cxcywh_to_xyxy((ref + offsets).sigmoid())
        logits = m.dot_product_scoring(
            decoder_hidden_states=hidden, text_features=enc.text_features, text_mask=mask
        )[0, ..., 0]
        return Sam3Detections(
            logits=logits.float(),
            presence_logits=dec.presence_logits[-1].float(),
            boxes=boxes.float(),
            queries=hidden[0],
            encoder_states=enc.last_hidden_state,
            prompts=Sam3Prompts(feats, mask),
        )

    @torch.inference_mode()
    def mask_logits(
        self, embedding: ImageEmbedding, det: Sam3Detections, row: int, queries: torch.Tensor
    ) -> torch.Tensor:
        """The mask decoder for some queries of one prompt.

        Only the queries asked for are embedded; the pixel decoder runs once for the prompt.

        Args:
            embedding: The image's embedding.
            det: From :meth:`detect`.
            row: Which of its prompts.
            queries: (K,) long query indices.

        Returns:
            (K, 4E, 4E) float32 mask logits covering the whole (stretched) image.
        """
        levels, _ = self._levels(embedding)
        sel = slice(row, row + 1)
        out = self.model.mask_decoder(
            decoder_queries=det.queries[sel][:, queries.to(self.device)],
            backbone_features=levels,
            encoder_hidden_states=det.encoder_states[sel],
            prompt_features=det.prompts.features[sel],
            prompt_mask=det.prompts.mask[sel],
        )
        return out.pred_masks[0].float()

    @staticmethod
    def upscale(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """(K, h, w) mask logits -> (K, H, W) bool masks, one at a time (memory).

        As the processor: the sigmoid resized bilinearly to (H, W), above 0.5.
        """
        out = torch.empty((logits.shape[0], *size), dtype=torch.bool, device=logits.device)
        for i in range(logits.shape[0]):
            prob = F.interpolate(
                logits[i][None, None].sigmoid(), size=size, mode="bilinear", align_corners=False
            )
            out[i] = prob[0, 0] > MASK_THRESHOLD
        return out


# -- loading ------------------------------------------------------------------------------------


def load_sam3(spec: str | os.PathLike, device: torch.device, dtype: torch.dtype) -> Sam3Backend:
    """Load a SAM 3 checkpoint (model and processor) through the config-first loader.

    Args:
        spec: Hub id (``"facebook/sam3"``), alias (``"sam3"``) or local ``save_pretrained``
            folder holding the model and its processor (tokenizer + image processor files).
        device: Where to run.
        dtype: Weight precision.

    Returns:
        The back-end.

    Raises:
        ModelLoadError: Not found, not SAM 3, weights that do not all fit (missing or
            unexpected tensors), or no processor next to the model.
    """
    from grounded_sam.sam.loading import load_sam_model, resolve_sam_checkpoint

    ckpt = resolve_sam_checkpoint(spec)
    if ckpt.grounder is not families.SAM3:
        raise ModelLoadError(f"{ckpt.spec!r} is a {ckpt.family} checkpoint, not SAM 3.")
    model = load_sam_model(spec, device, dtype)
    return Sam3Backend(model, _load_processor(ckpt.source, ckpt.spec))


def _load_processor(source: str, spec: str) -> Any:
    from transformers import Sam3Processor

    try:
        return Sam3Processor.from_pretrained(source)
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise ModelLoadError(
            f"SAM 3 model {spec!r} has no usable processor (tokenizer and image processor "
            "files: tokenizer.json or vocab.json + merges.txt, processor_config.json / "
            "preprocessor_config.json); save Sam3Processor.save_pretrained into the same folder "
            f"as the model. ({type(exc).__name__}: {' '.join(str(exc).split())[:200]})"
        ) from exc
