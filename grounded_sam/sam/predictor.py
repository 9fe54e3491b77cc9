"""SAM with a kept image embedding: encode images once, decode many prompts in batches.

:class:`SamPredictor` drives SAM and is the base of every family's predictor (HQ-SAM:
:mod:`grounded_sam.sam.hq`, SAM 2: :mod:`grounded_sam.sam.sam2`). What is written once here
for all of them: :meth:`SamPredictor.encode_batch` (a family supplies only its image-encoder
call, :meth:`~SamPredictor._image_encoder`, and how to split its batched outputs,
:meth:`~SamPredictor._encoder_outputs`), the decoder context, prompt conversion and decoding.

Thread safety: a predictor holds no per-image state. What it keeps is fixed at construction
(the model, its transform, the fast decoder, the model-wide positional encoding); the
prompt-independent decoder work of an image is a frozen
:class:`~grounded_sam.sam.types.DecoderContext` kept with the image's embedding (built by
:meth:`SamPredictor.encode_batch`, or by :meth:`SamPredictor.prepare` for an embedding
without one), never on the predictor. So :meth:`~SamPredictor.decode`,
:meth:`~SamPredictor.predict` and :meth:`~SamPredictor.encode_batch` may run from several
threads at once on one predictor, on the same or different embeddings (PyTorch runs
inference on shared modules concurrently; whether that is faster than one call at a time
depends on the device). Do not change the model's weights or a setting such as HQ-SAM's
``hq_token_only`` while another thread decodes.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import torch

from grounded_sam import limits
from grounded_sam.inputs import ImageInput, as_boxes, as_points, load_image
from grounded_sam.sam import families
from grounded_sam.sam.families import SamFamily
from grounded_sam.sam.fast_decoder import FastMaskDecoder
from grounded_sam.sam.types import DecoderContext, DecoderOutput, ImageEmbedding, Prediction

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
            of a ``torch.compile`` backend). Shapes are kept static: the encoder sees padded
            square images (it compiles once per number of images per call), and decoder
            batches are padded to a power of two, so each model compiles once per prompt
            layout and batch bucket (at most 7 buckets up to 64 prompts). Worth it on GPUs;
            the first calls are slow while compiling.
    """

    mask_threshold: float = 0.0
    #: Registry name of the family this class drives (see :mod:`grounded_sam.sam.families`).
    FAMILY = "sam"
    #: The many-prompt decoder (None for a stand-in model that decodes its own way).
    _fast: FastMaskDecoder | None = None

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
        """The many-prompt decoder and the model-wide positional encoding (set once here)."""
        self._image_pe: torch.Tensor | None = None
        try:  # a stand-in model without SAM's decoder layout decodes its own way
            self._fast = FastMaskDecoder(model.mask_decoder, head=self.family.head)
        except (AttributeError, TypeError, ValueError):
            self._fast = None
        if self._fast is not None:
            with torch.inference_mode():  # (1, C, E, E), the same for every image
                self._image_pe = model.get_image_wide_positional_embeddings()
        self.compiled = bool(compile)
        self._encoder_fn = self._image_encoder
        self._decoder_fn = None if self._fast is None else self._fast.__call__
        if compile and self._decoder_fn is not None:
            backend = compile if isinstance(compile, str) else "inductor"
            self._encoder_fn = torch.compile(self._encoder_fn, dynamic=False, backend=backend)
            self._decoder_fn = torch.compile(self._decoder_fn, dynamic=False, backend=backend)

    # -- model calls (overridden by families, and by stand-ins in tests) -------------------

    def _image_encoder(self, pixels: torch.Tensor) -> torch.Tensor:
        """The family's image encoder (what ``compile=`` compiles): SAM's ViT -> (B, C, E, E)."""
        return self.model.get_image_embeddings(pixels)

    def _encoder_outputs(self, out) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """The image encoder's output as ``(embeddings (B, C, E, E), features)``.

        Each of ``features`` is batched along dim 0 too; SAM has none.
        """
        return out, ()

    def encoder_shapes(
        self,
    ) -> tuple[tuple[int, ...] | None, tuple[tuple[int, ...], ...] | None]:
        """What :meth:`encode` gives for any image, read from the model (no encoder pass).

        Returns:
            ``(embedding shape (1, C, E, E), feature shapes)`` (SAM has no features); None
            for what the model does not say (a stand-in without SAM's positional encoding,
            or features of a model laid out otherwise).
        """
        pe = self._image_pe
        if not isinstance(pe, torch.Tensor) or pe.ndim != 4:
            return None, None
        _, c, e, _ = (int(s) for s in pe.shape)
        try:
            feats: tuple[tuple[int, ...], ...] | None = self._feature_shapes(e)
        except AttributeError:
            feats = None
        return (1, c, e, e), feats

    def _feature_shapes(self, side: int) -> tuple[tuple[int, ...], ...]:
        """Shapes of the family's extra encoder features for an (E, E) = (side, side) embedding.

        Raises:
            AttributeError: The model is laid out otherwise.
        """
        return ()

    def _encode_pixels(self, pixels: torch.Tensor):
        """Run the image encoder on (B, 3, S, S) normalised pixels (compiled if asked).

        Returns:
            What :meth:`_image_encoder` returns (SAM: (B, C, E, E); HQ-SAM and SAM 2: tuples).
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
        context: DecoderContext | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run prompt encoder + mask decoder for B prompts on one image embedding.

        Uses :class:`grounded_sam.sam.fast_decoder.FastMaskDecoder`: without mask inputs the
        prompt-independent image side of layer 0 comes from ``context``.

        Args:
            embeddings: (1, C, E, E) image embedding.
            points: (B, N, 2) xy in the input frame, or None.
            labels: (B, N) int labels, or None.
            boxes: (B, 4) xyxy in the input frame, or None.
            mask_input: (B, 1, L, L) logits, or None.
            multimask_output: Three masks per prompt instead of one.
            context: This image's decoder context (:meth:`decode` always gives one).

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
            embeddings, sparse, dense, mask_input is None, multimask_output, context
        )

    def _fast_decode(
        self,
        embeddings: torch.Tensor,
        sparse: torch.Tensor | None,
        dense: torch.Tensor,
        shareable: bool,
        multimask_output: bool,
        context: DecoderContext,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompt embeddings -> masks through the many-prompt decoder.

        Args:
            embeddings: (1, C, E, E) image embedding.
            sparse: (B, 1, T, C) point/box tokens, or None (mask-only prompts).
            dense: (B|1, C, E, E) dense prompt embeddings.
            shareable: No prompt has a mask input, so every dense embedding is the no-mask one
                and the image side of layer 0 is ``context.shared`` (computed once per image).
            multimask_output: Three masks per prompt instead of one.
            context: The image's decoder context (positional encoding, shared work, extras).

        Returns:
            ``(logits (B, C, L, L), iou (B, C))``.
        """
        batch = sparse.shape[0] if sparse is not None else dense.shape[0]
        shared = None
        if shareable:  # every prompt has the same (no-mask) dense embedding
            dense = dense[:1]
            shared = context.shared
        elif dense.shape[0] != batch:
            dense = dense.expand(batch, -1, -1, -1)
        sparse = None if sparse is None or sparse.shape[2] == 0 else sparse[:, 0]
        if self.compiled:  # static shapes: pad the batch to a power of two
            padded = 1 << max(batch - 1, 0).bit_length()
            sparse = None if sparse is None else _pad_rows(sparse, padded)
            dense = dense if dense.shape[0] == 1 else _pad_rows(dense, padded)
        masks, iou = self._decoder_fn(
            embeddings, context.image_pe, sparse, dense, multimask_output, shared=shared,
            extras=context.extras,
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

    # -- the decoder context --------------------------------------------------------------

    def _build_context(
        self,
        embeddings: torch.Tensor,
        features: tuple[torch.Tensor, ...],
        shared: bool = True,
    ) -> DecoderContext | None:
        """The decoder's prompt-independent work for one image (None for a stand-in model).

        Args:
            embeddings: (1, C, E, E) image embedding.
            features: Its extra encoder features.
            shared: Also compute layer 0's shared image side (for prompts without masks).
        """
        if self._fast is None:
            return None
        work = None
        if shared:
            _, dense = self.model.prompt_encoder(
                input_points=None, input_labels=None, input_boxes=None, input_masks=None
            )  # the no-mask dense embedding, (1, C, E, E)
            work = self._fast.prepare(embeddings, self._image_pe, dense)
        return DecoderContext(
            image_pe=self._image_pe,
            shared=work,
            extras=self._fast.prepare_features(embeddings, features),
            source=self._fast.decoder,
        )

    def _fits(self, context: DecoderContext | None, shared: bool = True) -> bool:
        """Whether a kept context was built by this model (and has the shared part if asked)."""
        return (
            context is not None
            and self._fast is not None
            and context.source is self._fast.decoder
            and (context.shared is not None or not shared)
        )

    @torch.inference_mode()
    def prepare(self, embedding: ImageEmbedding) -> ImageEmbedding:
        """The embedding with this model's decoder context (built here if it has none).

        :meth:`encode_batch` already returns prepared embeddings; call this for one that was
        made otherwise (read from an index file, built by hand), so that every later
        :meth:`decode` on it reuses the context instead of building one per call.

        Args:
            embedding: An embedding made by this model.

        Returns:
            ``embedding`` itself when it already carries this model's context, else a copy
            (sharing the tensors) with the context built.

        Raises:
            ValueError: The embedding does not fit this model's family.
        """
        self._check_embedding(embedding)
        if self._fits(embedding.context) or self._fast is None:
            return embedding
        context = self._build_context(embedding.embeddings, embedding.features)
        return dataclasses.replace(embedding, context=context)

    # -- public API -----------------------------------------------------------------------

    @torch.inference_mode()
    def encode_batch(self, images: list[np.ndarray]) -> list[ImageEmbedding]:
        """Run the image encoder once on several images, each with its decoder context.

        The images are preprocessed one by one (each keeps its own size) and encoded in one
        call; one image is one call of batch 1, so :meth:`encode` gives exactly what it did.
        Batching pays on a GPU; on a CPU it is about as fast as one image at a time.

        Args:
            images: (H, W, 3) uint8 RGB arrays (sizes may differ; see
                :func:`grounded_sam.inputs.load_image`).

        Returns:
            One kept embedding per image, in order, each reusable by any number of
            :meth:`decode` calls. The tensors of several images are separate copies (an
            image's embedding never holds the others' memory).

        Raises:
            ValueError: No images.
        """
        if len(images) == 0:
            raise ValueError("encode_batch needs at least one image.")
        pixels = torch.cat([self.transform.preprocess(a, self.device, self.dtype) for a in images])
        embeddings, features = self._encoder_outputs(self._encode_pixels(pixels))
        out = []
        for i, image in enumerate(images):
            one = slice(i, i + 1)
            emb, feats = embeddings[one], tuple(f[one] for f in features)
            if len(images) > 1:  # not views of the batch: each may be kept or saved alone
                emb, feats = emb.clone(), tuple(f.clone() for f in feats)
            size = (int(image.shape[0]), int(image.shape[1]))
            out.append(
                ImageEmbedding(
                    embeddings=emb,
                    original_size=size,
                    input_size=self.transform.input_size(size),
                    features=feats,
                    context=self._build_context(emb, feats),
                )
            )
        return out

    def encode(self, image: np.ndarray) -> ImageEmbedding:
        """Run the image encoder once (``encode_batch([image])[0]``).

        Args:
            image: (H, W, 3) uint8 RGB (use :func:`grounded_sam.inputs.load_image` first).

        Returns:
            The kept embedding (with its decoder context), reusable by any number of
            :meth:`decode` calls.
        """
        return self.encode_batch([image])[0]

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

        The embedding's decoder context is used; one without this model's context (see
        :meth:`prepare`) gets one built for this call only.

        Args:
            embedding: From :meth:`encode` / :meth:`encode_batch` (or :meth:`prepare`).
            points: (B, N, 2) xy in original image pixels, or None.
            labels: (B, N) int, 1 = foreground, 0 = background; required with points.
            boxes: (B, 4) xyxy in original image pixels, or None.
            mask_input: (B, 1, L, L) low-res logits from an earlier prediction, or None.
            multimask_output: Return three masks per prompt (whole/part/sub-part).

        Returns:
            Batched low-res logits and predicted IoUs.

        Raises:
            ValueError: No prompt was given, the batch sizes disagree, or the embedding was
                made by another SAM family.
        """
        check_prompts(points, labels, boxes, mask_input)
        self._check_embedding(embedding)
        size = embedding.original_size
        pts = None if points is None else self.transform.apply_coords(points.to(self.device), size)
        lab = None if labels is None else labels.to(self.device, torch.long)
        bxs = None if boxes is None else self.transform.apply_boxes(boxes.to(self.device), size)
        msk = None if mask_input is None else self._model_mask_input(mask_input)
        context = embedding.context
        if not self._fits(context, shared=mask_input is None):
            context = self._build_context(
                embedding.embeddings, embedding.features, shared=mask_input is None
            )
        logits, iou = self._run_decoder(
            embedding.embeddings, pts, lab, bxs, msk, multimask_output, context
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
