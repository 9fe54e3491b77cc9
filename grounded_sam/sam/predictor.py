"""SAM with a kept image embedding: encode an image once, decode many prompts in batches."""

from __future__ import annotations

import logging

import numpy as np
import torch

from grounded_sam import limits
from grounded_sam.inputs import ImageInput, as_boxes, as_points, load_image
from grounded_sam.sam import families
from grounded_sam.sam.families import SamFamily
from grounded_sam.sam.fast_decoder import FastMaskDecoder
from grounded_sam.sam.types import DecoderOutput, ImageEmbedding, Prediction, SharedImage

# the value types live in grounded_sam.sam.types; re-exported here for older imports
__all__ = ["ImageEmbedding", "DecoderOutput", "Prediction", "SamPredictor"]

logger = logging.getLogger(__name__)


def check_prompts(points, labels, boxes, mask_input) -> None:
    """Prompt checks shared by every family's ``decode`` (ValueError saying what to do)."""
    given = [t for t in (points, boxes, mask_input) if t is not None]
    if not given:
        raise ValueError("Give at least one prompt: points, boxes or mask_input.")
    if len({int(t.shape[0]) for t in given}) != 1:
        raise ValueError("points, boxes and mask_input must have the same batch size.")
    if points is not None and labels is None:
        raise ValueError("Point prompts need labels (1 = foreground, 0 = background).")


class SamPredictor:
    """A transformers ``SamModel`` driven the way Meta's predictor drives SAM.

    Coordinates given to this class are always in original image pixels; the conversion to
    SAM's input frame is done here, with the same arithmetic as Meta's reference.

    Args:
        model: A ``transformers.SamModel`` (already on its device and dtype, in eval mode).
        compile: ``torch.compile`` the image encoder and the mask decoder (True, or the name
            of a ``torch.compile`` backend). Shapes are kept static: the encoder always sees
            one padded square image, and decoder batches are padded to a power of two, so each
            model compiles once per prompt layout and batch bucket (at most 7 buckets up to
            64 prompts). Worth it on GPUs; the first calls are slow while compiling.
    """

    mask_threshold: float = 0.0
    #: Registry name of the family this class drives (see :mod:`grounded_sam.sam.families`).
    FAMILY = "sam"

    def __init__(self, model, compile: bool | str = False) -> None:
        self.model = model
        self.transform = self.family.transform(model.config)
        param = next(model.parameters())
        self.device = param.device
        self.dtype = param.dtype
        self._setup_decoder(model, compile)

    @property
    def family(self) -> SamFamily:
        """This predictor's family record: transform, decoder head, encoder features."""
        return families.get(self.FAMILY)

    def _setup_decoder(self, model, compile: bool | str = False) -> None:
        """The many-prompt decoder and its per-image caches (shared by every SAM family)."""
        self._image_pe: torch.Tensor | None = None
        try:  # a stand-in model without SAM's decoder layout decodes its own way
            self._fast: FastMaskDecoder | None = FastMaskDecoder(
                model.mask_decoder, head=self.family.head
            )
        except (AttributeError, TypeError, ValueError):
            self._fast = None
        # prompt-independent decoder work of the last embedding decoded (see fast_decoder)
        self._shared_for: torch.Tensor | None = None
        self._shared: SharedImage | None = None
        self._extras_for: torch.Tensor | None = None
        self._extras: tuple[torch.Tensor, ...] = ()
        self.compiled = bool(compile)
        self._encoder_fn = self._image_encoder
        self._decoder_fn = None if self._fast is None else self._fast.__call__
        if compile and self._decoder_fn is not None:
            backend = compile if isinstance(compile, str) else "inductor"
            self._encoder_fn = torch.compile(self._encoder_fn, dynamic=False, backend=backend)
            self._decoder_fn = torch.compile(self._decoder_fn, dynamic=False, backend=backend)

    # -- model calls (overridden by stand-ins in tests) ------------------------------------

    def _image_encoder(self, pixels: torch.Tensor) -> torch.Tensor:
        """The family's image encoder (what ``compile=`` compiles): SAM's ViT -> (1, C, E, E)."""
        return self.model.get_image_embeddings(pixels)

    def _encode_pixels(self, pixels: torch.Tensor):
        """Run the image encoder on (1, 3, S, S) normalised pixels (compiled if asked).

        Returns:
            SAM: (1, C, E, E); HQ-SAM and SAM 2: their :meth:`_image_encoder` tuples.
        """
        return self._encoder_fn(pixels)

    def _run_decoder(
        self,
        embeddings: torch.Tensor,
        points: torch.Tensor | None,
        labels: torch.Tensor | None,
        boxes: torch.Tensor | None,
        mask_input: torch.Tensor | None,
        multimask_output: bool,
        extras: tuple[torch.Tensor, ...] = (),
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run prompt encoder + mask decoder for B prompts on one image embedding.

        Uses :class:`grounded_sam.sam.fast_decoder.FastMaskDecoder`: without mask inputs the
        prompt-independent image-side work is done once per embedding and kept.

        Args:
            embeddings: (1, C, E, E) image embedding.
            points: (B, N, 2) xy in the input frame, or None.
            labels: (B, N) int labels, or None.
            boxes: (B, 4) xyxy in the input frame, or None.
            mask_input: (B, 1, L, L) logits, or None.
            multimask_output: Three masks per prompt instead of one.
            extras: The family's per-image decoder inputs (:meth:`_decoder_extras`).

        Returns:
            ``(logits (B, C, L, L), iou (B, C))``.
        """
        model = self.model
        sparse, dense = model.prompt_encoder(
            input_points=None if points is None else points[:, None].to(self.dtype),
            input_labels=None if labels is None else labels[:, None],
            input_boxes=None if boxes is None else boxes[:, None].to(self.dtype),
            input_masks=None if mask_input is None else mask_input.to(self.dtype),
        )
        return self._fast_decode(
            embeddings, sparse, dense, mask_input is None, multimask_output, extras
        )

    def _fast_decode(
        self,
        embeddings: torch.Tensor,
        sparse: torch.Tensor | None,
        dense: torch.Tensor,
        shareable: bool,
        multimask_output: bool,
        extras: tuple[torch.Tensor, ...] = (),
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompt embeddings -> masks through the many-prompt decoder.

        Args:
            embeddings: (1, C, E, E) image embedding.
            sparse: (B, 1, T, C) point/box tokens, or None (mask-only prompts).
            dense: (B|1, C, E, E) dense prompt embeddings.
            shareable: No prompt has a mask input, so every dense embedding is the no-mask one
                and the image side of layer 0 is shared (computed once per embedding).
            multimask_output: Three masks per prompt instead of one.
            extras: The family's per-image upscaling inputs (:meth:`_decoder_extras`).

        Returns:
            ``(logits (B, C, L, L), iou (B, C))``.
        """
        batch = sparse.shape[0] if sparse is not None else dense.shape[0]
        if self._image_pe is None:
            self._image_pe = self.model.get_image_wide_positional_embeddings()
        shared = None
        if shareable:
            # every prompt has the same (no-mask) dense embedding: share the image side
            dense = dense[:1]
            if self._shared_for is not embeddings:
                self._shared = self._fast.prepare(embeddings, self._image_pe, dense)
                self._shared_for = embeddings
            shared = self._shared
        elif dense.shape[0] != batch:
            dense = dense.expand(batch, -1, -1, -1)
        sparse = None if sparse is None or sparse.shape[2] == 0 else sparse[:, 0]
        if self.compiled:  # static shapes: pad the batch to a power of two
            padded = 1 << max(batch - 1, 0).bit_length()
            sparse = None if sparse is None else _pad_rows(sparse, padded)
            dense = dense if dense.shape[0] == 1 else _pad_rows(dense, padded)
        masks, iou = self._decoder_fn(
            embeddings, self._image_pe, sparse, dense, multimask_output, shared=shared,
            extras=extras,
        )
        return masks[:batch], iou[:batch]

    def _check_embedding(self, embedding: ImageEmbedding) -> None:
        """Refuse an embedding that lacks the encoder features this family's decoder needs."""
        count, what = self.family.encoder_features, self.family.features_doc
        if len(embedding.features) != count:
            raise ValueError(
                f"This embedding does not fit this model: it carries {len(embedding.features)} "
                f"extra encoder feature map(s), and this SAM family's decoder needs {count}: "
                f"{what}. It was made by another SAM family (or saved without them); encode "
                "the image with this model."
            )

    def _model_mask_input(self, mask_input: torch.Tensor) -> torch.Tensor:
        """A (B, 1, L, L) mask prompt as the family's prompt encoder takes it."""
        return mask_input.to(self.device)

    def _decoder_extras(self, embedding: ImageEmbedding) -> tuple[torch.Tensor, ...]:
        """The family's per-image decoder inputs for ``embedding`` (kept for the last one)."""
        if not embedding.features:
            return ()
        if self._extras_for is not embedding.embeddings:
            self._extras = self._fast.prepare_features(embedding.embeddings, embedding.features)
            self._extras_for = embedding.embeddings
        return self._extras

    # -- public API -----------------------------------------------------------------------

    @torch.inference_mode()
    def encode(self, image: np.ndarray) -> ImageEmbedding:
        """Run the image encoder once.

        Args:
            image: (H, W, 3) uint8 RGB (use :func:`grounded_sam.inputs.load_image` first).

        Returns:
            The kept embedding, reusable by any number of :meth:`decode` calls.
        """
        original_size = (int(image.shape[0]), int(image.shape[1]))
        pixels = self.transform.preprocess(image, self.device, self.dtype)
        embeddings = self._encode_pixels(pixels)
        return ImageEmbedding(
            embeddings=embeddings,
            original_size=original_size,
            input_size=self.transform.input_size(original_size),
        )

    @torch.inference_mode()
    def decode(
        self,
        embedding: ImageEmbedding,
        *,
        points: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        boxes: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = True,
    ) -> DecoderOutput:
        """Decode a batch of prompts against a kept embedding (no encoder pass).

        Args:
            embedding: From :meth:`encode`.
            points: (B, N, 2) xy in original image pixels, or None.
            labels: (B, N) int, 1 = foreground, 0 = background; required with points.
            boxes: (B, 4) xyxy in original image pixels, or None.
            mask_input: (B, 1, L, L) low-res logits from an earlier prediction, or None.
            multimask_output: Return three masks per prompt (whole/part/sub-part).

        Returns:
            Batched low-res logits and predicted IoUs.

        Raises:
            ValueError: No prompt was given, or the batch sizes disagree.
        """
        check_prompts(points, labels, boxes, mask_input)
        self._check_embedding(embedding)
        size = embedding.original_size
        pts = None if points is None else self.transform.apply_coords(points.to(self.device), size)
        lab = None if labels is None else labels.to(self.device, torch.long)
        bxs = None if boxes is None else self.transform.apply_boxes(boxes.to(self.device), size)
        msk = None if mask_input is None else self._model_mask_input(mask_input)
        logits, iou = self._run_decoder(
            embedding.embeddings,
            pts,
            lab,
            bxs,
            msk,
            multimask_output,
            extras=self._decoder_extras(embedding),
        )
        return DecoderOutput(low_res_logits=logits.float(), iou_scores=iou.float())

    @torch.inference_mode()
    def upscale(self, embedding: ImageEmbedding, low_res_logits: torch.Tensor) -> torch.Tensor:
        """Bring decoder logits to the original image size.

        Args:
            embedding: The embedding the logits were decoded from.
            low_res_logits: (B, C, L, L) logits.

        Returns:
            (B, C, H, W) float32 logits; threshold at :attr:`mask_threshold` for masks.
        """
        return self.transform.postprocess_masks(
            low_res_logits, embedding.input_size, embedding.original_size
        )

    def predict(
        self,
        image: ImageInput | ImageEmbedding,
        points: object | None = None,
        labels: object | None = None,
        box: object | None = None,
        mask_input: object | None = None,
        multimask_output: bool = True,
    ) -> Prediction:
        """Segment with SAM's geometric prompts.

        Args:
            image: An image (path, PIL, HxWx3 uint8 array) or an :class:`ImageEmbedding`
                from :meth:`encode` (then no encoder pass is run).
            points: (N, 2) xy in original pixels.
            labels: (N,) 1 = foreground, 0 = background (default all foreground).
            box: (4,) or (B, 4) xyxy in original pixels; B boxes are B prompts decoded in one
                batch (points, if given, are shared by every box).
            mask_input: (1, L, L) or (B, 1, L, L) low-res logits from an earlier prediction.
            multimask_output: Three masks (whole/part/sub-part) instead of one.

        Returns:
            A :class:`Prediction` (numpy, original image size).

        Raises:
            ValueError: Prompts are missing, malformed or outside the image.
        """
        embedding = image if isinstance(image, ImageEmbedding) else self.encode(load_image(image))
        size = embedding.original_size
        pts_t = lab_t = box_t = mask_t = None
        batch = 1
        if box is not None:
            box_t = torch.from_numpy(as_boxes(box, size))
            batch = box_t.shape[0]
            if batch > limits.MAX_BOXES_PER_CALL:
                raise ValueError(
                    f"Got {batch} boxes; at most {limits.MAX_BOXES_PER_CALL} per call "
                    f"({limits.REASONS['boxes']})."
                )
        n_masks = batch * (3 if multimask_output else 1)
        if n_masks * size[0] * size[1] > limits.MAX_MASK_PIXELS:
            most = max(
                1, limits.MAX_MASK_PIXELS // ((3 if multimask_output else 1) * size[0] * size[1])
            )
            raise ValueError(
                f"{batch} box prompts on a {size[1]}x{size[0]} image give {n_masks} "
                f"full-resolution masks, more than this call's budget of "
                f"{limits.MAX_MASK_PIXELS:,} mask pixels ({limits.REASONS['mask_pixels']}); "
                f"give at most {most} boxes per call here."
            )
        if points is not None:
            pts, lab = as_points(points, labels, size)
            if pts.shape[0] > limits.MAX_POINTS_PER_CALL:
                raise ValueError(
                    f"Got {pts.shape[0]} points; at most {limits.MAX_POINTS_PER_CALL} per call "
                    f"({limits.REASONS['points']})."
                )
            pts_t = torch.from_numpy(pts)[None].expand(batch, -1, -1)
            lab_t = torch.from_numpy(lab)[None].expand(batch, -1)
        elif labels is not None:
            raise ValueError("labels were given without points.")
        if mask_input is not None:
            mask_t = self._check_mask_input(mask_input, batch)
        if pts_t is None and box_t is None and mask_t is None:
            raise ValueError("Give at least one prompt: points, a box, or mask_input.")
        out = self.decode(
            embedding,
            points=pts_t,
            labels=lab_t,
            boxes=box_t,
            mask_input=mask_t,
            multimask_output=multimask_output,
        )
        # Upscaled in chunks: the float logits of all masks at once would be 4x the masks.
        masks = torch.cat(
            [
                self.upscale(embedding, out.low_res_logits[i : i + 1]) > self.mask_threshold
                for i in range(out.low_res_logits.shape[0])
            ]
        )
        single = box is None or np.asarray(box).ndim == 1
        sel = 0 if single else slice(None)
        return Prediction(
            masks=masks[sel].cpu().numpy(),
            iou_predictions=out.iou_scores[sel].cpu().numpy(),
            low_res_logits=out.low_res_logits[sel].cpu().numpy(),
        )

    def _check_mask_input(self, mask_input: object, batch: int) -> torch.Tensor:
        side = self.transform.low_res_size
        try:
            given = np.asarray(mask_input, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"mask_input must be an array of numbers: {exc}") from None
        mask = torch.as_tensor(given)
        if mask.ndim == 2:
            mask = mask[None]
        if mask.ndim == 3:
            mask = mask[None]
        if mask.ndim != 4 or tuple(mask.shape[1:]) != (1, side, side):
            raise ValueError(
                f"mask_input must be low-res logits shaped (1, {side}, {side}) (or "
                f"(B, 1, {side}, {side})) as returned in Prediction.low_res_logits, got shape "
                f"{tuple(given.shape)}."
            )
        if not torch.isfinite(mask).all():
            raise ValueError("mask_input contains NaN or infinite values.")
        if mask.shape[0] == 1 and batch > 1:
            mask = mask.expand(batch, -1, -1, -1)
        if mask.shape[0] != batch:
            raise ValueError(f"mask_input has {mask.shape[0]} masks for {batch} prompts.")
        return mask


def _pad_rows(x: torch.Tensor, rows: int) -> torch.Tensor:
    """Pad dim 0 to ``rows`` by repeating the last row (padding rows are sliced off)."""
    if x.shape[0] >= rows:
        return x
    return torch.cat([x, x[-1:].expand(rows - x.shape[0], *x.shape[1:])])
