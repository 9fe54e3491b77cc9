"""SAM 2 / 2.1 (transformers ``Sam2Model``) behind the SAM predictor interface.

What differs from SAM, following Meta's ``SAM2ImagePredictor``:

* **Frame.** The image is resized to the square S x S frame (S = 1024 released) without
  keeping its aspect ratio and without padding (``Sam2Transform``), so ``input_size`` is
  (S, S) and the whole low-res frame is image. Pixels are scaled to [0, 1] and normalised with
  ImageNet mean/std; prompts are scaled by (S / W, S / H); masks are upscaled in one bilinear
  step to the original size.
* **Kept embedding.** Besides the (1, C, S/16, S/16) image embedding (with SAM 2's
  "no memory" embedding added, as the image predictor does), the decoder needs the two
  high-resolution backbone levels, already projected by the decoder's ``conv_s0`` / ``conv_s1``:
  ``features`` = ((1, C/8, S/4, S/4), (1, C/4, S/8, S/8)). They are kept with the embedding and
  saved in indexes.
* **Single-mask output** uses SAM 2's dynamic fallback (the best multimask output when the
  single mask is unstable), as Meta's predictor. Meta's predictor upscales the raw logits but
  hands back low-res logits clamped to [-32, 32]; here the raw logits are kept (so masks match)
  and a ``mask_input`` is clamped on the way in (so refinement matches).

Prompts are decoded by the many-prompt :class:`~grounded_sam.sam.fast_decoder.FastMaskDecoder`:
SAM 2's two-way transformer has SAM's layout (plus an object-score token), so layer 0's image
side is shared and projections are absorbed as for SAM; the high-resolution skip connections
are per-image tensors added in the upscaling branch's 2x2-block layout, so they are
rearranged once per image and shared by all prompts.
"""

from __future__ import annotations

import logging

import torch

from grounded_sam.sam.predictor import SamPredictor
from grounded_sam.sam.transforms import Sam2Transform  # noqa: F401 - re-exported

__all__ = ["Sam2Predictor", "Sam2Transform"]  # Sam2Transform lives in sam.transforms

logger = logging.getLogger(__name__)

#: Meta's predictor hands back low-res logits clamped to this; mask prompts are clamped too.
LOGIT_CLAMP = 32.0


class Sam2Predictor(SamPredictor):
    """A transformers ``Sam2Model`` driven the way Meta's ``SAM2ImagePredictor`` drives SAM 2.

    Args:
        model: ``transformers.Sam2Model`` (on its device and dtype, in eval mode).
        compile: ``torch.compile`` the image encoder and the mask decoder (see
            :class:`~grounded_sam.sam.predictor.SamPredictor`).
    """

    FAMILY = "sam2"

    def _image_encoder(self, pixels: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(B, 3, S, S) pixels -> (level 0, level 1, embedding) (``get_image_embeddings``)."""
        return self.model.get_image_embeddings(pixels)

    def _encoder_outputs(self, out) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """``features`` = (level 0 (B, C/8, S/4, S/4), level 1 (B, C/4, S/8, S/8))."""
        s0, s1, embeddings = out
        return embeddings, (s0, s1)

    def _feature_shapes(self, side: int) -> tuple[tuple[int, ...], ...]:
        """The two high-resolution levels: (1, C0, 4E, 4E) and (1, C1, 2E, 2E).

        C0 / C1 are the output channels of the decoder's ``conv_s0`` / ``conv_s1``.
        """
        md = self.model.mask_decoder
        return (
            (1, int(md.conv_s0.out_channels), 4 * side, 4 * side),
            (1, int(md.conv_s1.out_channels), 2 * side, 2 * side),
        )

    def _model_mask_input(self, mask_input: torch.Tensor) -> torch.Tensor:
        """Clamped to +-32 on the way in: Meta's predictor hands back clamped logits."""
        return mask_input.to(self.device, self.dtype).clamp(-LOGIT_CLAMP, LOGIT_CLAMP)
