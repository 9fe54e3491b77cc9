"""The small interface every SAM family implements, so that nothing above ``sam/`` cares which.

Implementations: :class:`grounded_sam.sam.predictor.SamPredictor` (SAM),
:class:`grounded_sam.sam.hq.SamHQPredictor` (HQ-SAM) and
:class:`grounded_sam.sam.sam2.Sam2Predictor` (SAM 2 / 2.1). Pick one for a loaded model with
:func:`grounded_sam.sam.factory.create_predictor`.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import torch

from grounded_sam.inputs import ImageInput
from grounded_sam.sam.types import DecoderOutput, ImageEmbedding, Prediction

__all__ = ["SamBackend"]


@runtime_checkable
class SamBackend(Protocol):
    """Encode an image once, decode batches of prompts against it, bring masks to full size.

    Attributes:
        model: The transformers model (``SamModel`` / ``SamHQModel`` / ``Sam2Model``).
        transform: Frame geometry: ``target_length``, ``low_res_size``, ``input_size``,
            ``apply_coords`` / ``apply_boxes``, ``postprocess_masks``, ``low_res_valid_size``.
        device: Device of the model.
        dtype: Weight dtype.
        mask_threshold: Logit threshold of a mask pixel.
    """

    model: object
    transform: object
    device: torch.device
    dtype: torch.dtype
    mask_threshold: float

    def encode(self, image: np.ndarray) -> ImageEmbedding:
        """(H, W, 3) uint8 RGB -> the kept embedding (with any ``features`` the decoder needs)."""
        ...

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
        """Decode B prompts against a kept embedding.

        Prompts are in original pixels: points (B, N, 2) with labels (B, N), boxes (B, 4)
        xyxy, mask_input (B, 1, L, L). Returns (B, C, L, L) low-res logits and (B, C) IoUs.
        """
        ...

    def upscale(self, embedding: ImageEmbedding, low_res_logits: torch.Tensor) -> torch.Tensor:
        """(B, C, L, L) low-res logits -> (B, C, H, W) float32 logits at the original size."""
        ...

    def predict(
        self,
        image: ImageInput | ImageEmbedding,
        points: object | None = None,
        labels: object | None = None,
        box: object | None = None,
        mask_input: object | None = None,
        multimask_output: bool = True,
    ) -> Prediction:
        """SAM's geometric prompts on an image or a kept embedding (numpy out)."""
        ...
