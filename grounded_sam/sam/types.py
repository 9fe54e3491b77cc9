"""The values the SAM back-ends hand around: embeddings, decoder context, decoder outputs.

Every SAM family (:mod:`grounded_sam.sam.families`) produces and consumes these, so they
live apart from any one family's predictor.

Thread safety: all of these are frozen dataclasses; nothing in this package writes into
their tensors after they are built. An :class:`ImageEmbedding` (with its
:class:`DecoderContext`) may therefore be decoded from any number of threads at once. Do not
write into the tensors of a value you share.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["DecoderContext", "DecoderOutput", "ImageEmbedding", "Prediction", "SharedImage"]


@dataclass(frozen=True, eq=False)
class SharedImage:
    """Prompt-independent layer-0 work of the mask decoder for one image (no mask input).

    Made by :meth:`grounded_sam.sam.fast_decoder.FastMaskDecoder.prepare`.

    Attributes:
        keys: (1, N, C) image tokens entering layer 0 (embedding + no-mask dense embedding),
            N = E*E.
        pe: (1, N, C) image positional encoding.
        t2i_k: (h, N, d) layer-0 token->image keys, per head.
        t2i_v: (h, N, d) layer-0 token->image values, per head.
        i2t_q: (h, N, d) layer-0 image->token queries, per head (already scaled).
    """

    keys: torch.Tensor
    pe: torch.Tensor
    t2i_k: torch.Tensor
    t2i_v: torch.Tensor
    i2t_q: torch.Tensor

    @property
    def nbytes(self) -> int:
        """Bytes of the tensors (``pe`` is a view of the model-wide encoding: not counted)."""
        return sum(_nbytes(t) for t in (self.keys, self.t2i_k, self.t2i_v, self.i2t_q))


@dataclass(frozen=True, eq=False)
class DecoderContext:
    """Everything the mask decoder computes once per image, before any prompt.

    Built by the predictor that encoded the image (``encode`` / ``encode_batch``), or by
    ``predictor.prepare(embedding)`` for an embedding without one (e.g. read from an index
    file: the context is never saved, it is rebuilt from the embedding). It only fits the
    model that built it.

    Attributes:
        image_pe: (1, C, E, E) image-wide positional encoding (the same tensor for every
            image of one model).
        shared: Layer 0's image side for prompts without a mask input; None when the
            predictor decodes without :class:`~grounded_sam.sam.fast_decoder.FastMaskDecoder`.
        extras: The family's per-image inputs to the upscaling branch
            (:meth:`~grounded_sam.sam.fast_decoder.FastMaskDecoder.prepare_features`):
            SAM 2's high-resolution levels in 2x2-block layout, HQ-SAM's fused features;
            empty for SAM.
    """

    image_pe: torch.Tensor | None
    shared: SharedImage | None = None
    extras: tuple[torch.Tensor, ...] = ()

    @property
    def nbytes(self) -> int:
        """Bytes held for this image (the model-wide ``image_pe`` is not counted)."""
        shared = 0 if self.shared is None else self.shared.nbytes
        return shared + sum(_nbytes(t) for t in self.extras)


@dataclass(frozen=True, eq=False)
class ImageEmbedding:
    """The SAM image encoder's output for one image, kept for reuse by every prompt.

    Attributes:
        embeddings: (1, C, E, E) image embedding (C=256, E=64 for released SAM), model dtype,
            on the model's device.
        original_size: (H, W) of the image that was encoded.
        input_size: (h, w) of the image after resize-longest-side, before padding.
        features: Further encoder outputs the decoder of another SAM family needs (HQ-SAM:
            the early ViT features; SAM 2: the high-resolution backbone levels); empty for
            SAM.
        context: The decoder's prompt-independent work for this image (see
            :class:`DecoderContext`); None until a predictor prepared it (decoding then
            builds one for that call).

    Equality and hashing are by identity (it holds tensors).
    """

    embeddings: torch.Tensor
    original_size: tuple[int, int]
    input_size: tuple[int, int]
    features: tuple[torch.Tensor, ...] = ()
    context: DecoderContext | None = None

    @property
    def nbytes(self) -> int:
        """Bytes of the embedding, its features and its decoder context."""
        context = 0 if self.context is None else self.context.nbytes
        return _nbytes(self.embeddings) + sum(_nbytes(f) for f in self.features) + context


@dataclass
class DecoderOutput:
    """Raw, batched mask decoder output.

    Attributes:
        low_res_logits: (B, C, L, L) float32 mask logits in the padded input frame at a
            quarter of its size (L=256 for released SAM); C=3 with multimask output, else 1.
        iou_scores: (B, C) float32, SAM's predicted IoU of each mask.
    """

    low_res_logits: torch.Tensor
    iou_scores: torch.Tensor


@dataclass
class Prediction:
    """Masks for one prompt (or one batch of box prompts), on the CPU as numpy.

    Attributes:
        masks: (C, H, W) bool at the original image size, or (B, C, H, W) when several boxes
            were given. C=3 (whole / part / sub-part) with multimask output, else 1.
        iou_predictions: (C,) or (B, C) float32 SAM predicted IoU per mask.
        low_res_logits: (C, L, L) or (B, C, L, L) float32 logits; pass one (1, L, L) slice
            back as ``mask_input`` to refine.
    """

    masks: np.ndarray
    iou_predictions: np.ndarray
    low_res_logits: np.ndarray


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()
