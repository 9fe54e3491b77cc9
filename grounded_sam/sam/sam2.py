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
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from grounded_sam.sam.predictor import SamPredictor
from grounded_sam.sam.transforms import SamTransform
from grounded_sam.sam.types import ImageEmbedding

__all__ = ["Sam2Predictor", "Sam2Transform"]

logger = logging.getLogger(__name__)

# SAM 2 normalises [0, 1] pixels with ImageNet statistics.
SAM2_MEAN = (0.485, 0.456, 0.406)
SAM2_STD = (0.229, 0.224, 0.225)
LOGIT_CLAMP = 32.0


@dataclass(frozen=True)
class Sam2Transform(SamTransform):
    """SAM 2's frame: the image stretched to ``target_length`` square, no padding.

    A :class:`~grounded_sam.sam.transforms.SamTransform` (same fields and interface, so
    everything above ``sam/`` works unchanged: ``low_res_size`` and ``apply_boxes`` are
    SAM's) with SAM 2's resize, coordinates, upscaling and valid area.

    Attributes:
        target_length: Side S of the square input frame.
    """

    def input_size(self, original_size: tuple[int, int]) -> tuple[int, int]:
        """(S, S): the image fills the whole frame."""
        return self.target_length, self.target_length

    def preprocess(
        self, image: np.ndarray, device: torch.device, dtype: torch.dtype
    ) -> torch.Tensor:
        """(H, W, 3) uint8 RGB -> (1, 3, S, S) normalised pixels.

        Resizing is bilinear with antialiasing on [0, 1] floats, as torchvision's ``Resize``
        in Meta's ``SAM2Transforms``.
        """
        x = torch.from_numpy(np.ascontiguousarray(image)).to(device).permute(2, 0, 1).float()
        x = (x / 255.0)[None]
        side = self.target_length
        x = F.interpolate(x, (side, side), mode="bilinear", align_corners=False, antialias=True)
        mean = torch.tensor(SAM2_MEAN, device=device).view(1, 3, 1, 1)
        std = torch.tensor(SAM2_STD, device=device).view(1, 3, 1, 1)
        return ((x - mean) / std).to(dtype)

    def apply_coords(self, coords: torch.Tensor, original_size: tuple[int, int]) -> torch.Tensor:
        """(..., 2) xy original pixels -> frame pixels (x * S / W, y * S / H)."""
        h, w = original_size
        side = self.target_length
        scale = torch.tensor([side / w, side / h], dtype=torch.float32, device=coords.device)
        return coords.float() * scale

    def postprocess_masks(
        self,
        low_res: torch.Tensor,
        input_size: tuple[int, int],
        original_size: tuple[int, int],
    ) -> torch.Tensor:
        """(B, C, L, L) logits -> (B, C, H, W) float32, one bilinear resize (as Meta's)."""
        return F.interpolate(low_res.float(), original_size, mode="bilinear", align_corners=False)

    def low_res_valid_size(self, input_size: tuple[int, int]) -> tuple[int, int]:
        """The whole low-res frame is image: (L, L)."""
        return self.low_res_size, self.low_res_size


class Sam2Predictor(SamPredictor):
    """A transformers ``Sam2Model`` driven the way Meta's ``SAM2ImagePredictor`` drives SAM 2.

    Args:
        model: ``transformers.Sam2Model`` (on its device and dtype, in eval mode).
        compile: ``torch.compile`` the image encoder and the mask decoder (see
            :class:`~grounded_sam.sam.predictor.SamPredictor`).
    """

    FEATURES = (2, "SAM 2's two high-resolution backbone levels")

    def __init__(self, model, compile: bool | str = False) -> None:
        self.model = model
        self.transform = Sam2Transform(int(model.config.prompt_encoder_config.image_size))
        param = next(model.parameters())
        self.device = param.device
        self.dtype = param.dtype
        self._setup_decoder(model, compile)

    def _image_encoder(self, pixels: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(1, 3, S, S) pixels -> (level 0, level 1, embedding) (``get_image_embeddings``)."""
        return self.model.get_image_embeddings(pixels)

    @torch.inference_mode()
    def encode(self, image: np.ndarray) -> ImageEmbedding:
        """Run the Hiera encoder + FPN once; keep the embedding and high-res features.

        Args:
            image: (H, W, 3) uint8 RGB.

        Returns:
            The kept embedding; ``features`` = (level 0 (1, C/8, S/4, S/4), level 1
            (1, C/4, S/8, S/8)).
        """
        original_size = (int(image.shape[0]), int(image.shape[1]))
        pixels = self.transform.preprocess(image, self.device, self.dtype)
        s0, s1, embeddings = self._encode_pixels(pixels)
        return ImageEmbedding(
            embeddings=embeddings,
            original_size=original_size,
            input_size=self.transform.input_size(original_size),
            features=(s0, s1),
        )

    def _model_mask_input(self, mask_input: torch.Tensor) -> torch.Tensor:
        """Clamped to +-32 on the way in: Meta's predictor hands back clamped logits."""
        return mask_input.to(self.device, self.dtype).clamp(-LOGIT_CLAMP, LOGIT_CLAMP)
