"""Resizing of images, prompts and masks between the original image and SAM's input frame.

SAM works in a square frame of side ``target_length`` (1024 for the released models): the
image is resized so its longest side is ``target_length``, normalised, and zero-padded at the
bottom/right. The mask decoder answers at a quarter of that side (256). One object owns all
of these conversions so that images, prompts and masks always agree.

SAM 2 frames differently (:class:`Sam2Transform`: the image stretched to the square frame,
no padding); each family's registry record (:mod:`grounded_sam.sam.families`) says which
transform it uses. Transforms are frozen: one may be shared by any number of threads.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

__all__ = ["Sam2Transform", "SamTransform"]

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


# SAM 2 normalises [0, 1] pixels with ImageNet statistics.
SAM2_MEAN = (0.485, 0.456, 0.406)
SAM2_STD = (0.229, 0.224, 0.225)


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
