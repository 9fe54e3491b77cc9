"""Resizing of images, prompts and masks between the original image and SAM's input frame.

SAM works in a square frame of side ``target_length`` (1024 for the released models): the
image is resized so its longest side is ``target_length``, normalised, and zero-padded at the
bottom/right. The mask decoder answers at a quarter of that side (256). One object owns all
of these conversions so that images, prompts and masks always agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

__all__ = ["SamTransform"]

# SAM's normalisation constants on the 0-255 scale (ImageNet mean/std).
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class SamTransform:
    """Geometry of SAM's input frame.

    Attributes:
        target_length: Side of the square input frame (``config.vision_config.image_size``).
    """

    target_length: int = 1024

    @property
    def low_res_size(self) -> int:
        """Side of the mask decoder's output (target_length / 4)."""
        return self.target_length // 4

    def input_size(self, original_size: tuple[int, int]) -> tuple[int, int]:
        """Size (h, w) of the resized image inside the frame, before padding.

        Args:
            original_size: (H, W) of the original image.

        Returns:
            (h, w) with ``max(h, w) == target_length`` (rounded half up).
        """
        oldh, oldw = original_size
        scale = self.target_length * 1.0 / max(oldh, oldw)
        newh, neww = oldh * scale, oldw * scale
        return max(1, int(newh + 0.5)), max(1, int(neww + 0.5))

    def preprocess(
        self, image: np.ndarray, device: torch.device, dtype: torch.dtype
    ) -> torch.Tensor:
        """Resize, normalise and pad an image for the image encoder.

        Resizing uses PIL bilinear (antialiased), as SAM was trained with.

        Args:
            image: (H, W, 3) uint8 RGB.
            device: Target device.
            dtype: Target dtype.

        Returns:
            (1, 3, target_length, target_length) normalised pixel tensor.
        """
        h, w = self.input_size(image.shape[:2])
        resized = np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))
        x = torch.from_numpy(np.array(resized, dtype=np.uint8)).to(device)
        x = x.permute(2, 0, 1).float()
        mean = torch.tensor(PIXEL_MEAN, device=device).view(3, 1, 1)
        std = torch.tensor(PIXEL_STD, device=device).view(3, 1, 1)
        x = (x - mean) / std
        x = F.pad(x, (0, self.target_length - w, 0, self.target_length - h))
        return x.unsqueeze(0).to(dtype)

    def apply_coords(self, coords: torch.Tensor, original_size: tuple[int, int]) -> torch.Tensor:
        """Map xy points from original pixels to the input frame.

        Args:
            coords: (..., 2) xy in original image pixels.
            original_size: (H, W) of the original image.

        Returns:
            (..., 2) float xy in input-frame pixels.
        """
        oldh, oldw = original_size
        newh, neww = self.input_size(original_size)
        scale = torch.tensor([neww / oldw, newh / oldh], dtype=torch.float32, device=coords.device)
        return coords.float() * scale

    def apply_boxes(self, boxes: torch.Tensor, original_size: tuple[int, int]) -> torch.Tensor:
        """Map xyxy boxes from original pixels to the input frame.

        Args:
            boxes: (..., 4) xyxy in original image pixels.
            original_size: (H, W) of the original image.

        Returns:
            (..., 4) float xyxy in input-frame pixels.
        """
        shape = boxes.shape
        return self.apply_coords(boxes.reshape(-1, 2, 2), original_size).reshape(shape)

    def postprocess_masks(
        self,
        low_res: torch.Tensor,
        input_size: tuple[int, int],
        original_size: tuple[int, int],
    ) -> torch.Tensor:
        """Upscale decoder logits to the original image size.

        Args:
            low_res: (B, C, L, L) logits, L = ``low_res_size``.
            input_size: (h, w) of the resized image in the frame.
            original_size: (H, W) of the original image.

        Returns:
            (B, C, H, W) float32 logits.
        """
        masks = F.interpolate(
            low_res.float(),
            (self.target_length, self.target_length),
            mode="bilinear",
            align_corners=False,
        )
        masks = masks[..., : input_size[0], : input_size[1]]
        return F.interpolate(masks, original_size, mode="bilinear", align_corners=False)

    def low_res_valid_size(self, input_size: tuple[int, int]) -> tuple[int, int]:
        """Part (h, w) of the low-res decoder frame covered by the image (not padding).

        Args:
            input_size: (h, w) of the resized image in the input frame.

        Returns:
            (ceil(h / 4), ceil(w / 4)).
        """
        return -(-input_size[0] // 4), -(-input_size[1] // 4)
