"""``ClipScorer``: CLIP text and region embeddings for grounding, batched on one device."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from grounded_sam.clip.regions import (
    CropSettings,
    CropStyle,
    RegionCropper,
    make_region_crop_pil,
    mean_fill_color,
)
from grounded_sam.clip.text import TextEncoder

__all__ = ["ClipScorer"]

logger = logging.getLogger(__name__)


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    values = tuple(int(s) for s in size)
    return (values[0], values[0]) if len(values) == 1 else (values[-2], values[-1])


def _triple(values: float | Sequence[float]) -> tuple[float, float, float]:
    if isinstance(values, (int, float)):
        return float(values), float(values), float(values)
    items = [float(v) for v in values]
    return (items[0],) * 3 if len(items) == 1 else (items[0], items[1], items[2])


class ClipScorer:
    """CLIP text and region encoder (open_clip model) used to score SAM proposals.

    Build it with :func:`grounded_sam.clip.load_clip`; the constructor takes an already loaded
    model. Embeddings are float32 and L2-normalised, so ``regions @ texts.T * logit_scale`` are
    CLIP logits.

    Args:
        model: An open_clip model in eval mode, on ``device`` with weights in ``dtype``.
        tokenizer: Its open_clip tokenizer.
        preprocess: open_clip's eval image transform for the model (PIL -> normalised tensor),
            used only by the per-crop reference path.
        spec: The model spec, for display.
        device: Device of the model.
        dtype: Precision of the model weights and inputs.
        crop_style: ``"masked"``, ``"box"`` or ``"blur"``.
        templates: Prompt templates with one ``{}``; None for the defaults.
        crop_margin: Context around each box, as a fraction of the box's longer side.
        batch_size: Crops per image-tower forward.
        text_batch_size: Prompts per text-tower forward.

    Attributes:
        model: The open_clip model.
        tokenizer: The open_clip tokenizer.
        preprocess: open_clip's eval transform (reference path).
        spec: Display string of the model spec.
        device: ``torch.device`` of the model.
        dtype: ``torch.dtype`` of the model.
        embed_dim: Embedding size ``D``.
        logit_scale: ``model.logit_scale.exp()`` as a float.
        logit_bias: The model's logit bias (SigLIP-style models) or None.
        image_size: ``(height, width)`` of the model input.
        mean: Per-channel normalisation mean in [0, 1].
        std: Per-channel normalisation std.
        fill_color: uint8 RGB background/padding colour of the crops (the mean colour).
        batch_size: Crops per image-tower forward.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Callable[[list[str]], torch.Tensor],
        preprocess: Callable[[Image.Image], torch.Tensor] | None,
        *,
        spec: str,
        device: torch.device,
        dtype: torch.dtype,
        crop_style: CropStyle = "masked",
        templates: Sequence[str] | None = None,
        crop_margin: float = 0.1,
        batch_size: int = 64,
        text_batch_size: int = 256,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        self.model = model
        self.tokenizer = tokenizer
        self.preprocess = preprocess
        self.spec = spec
        self.device = torch.device(device)
        self.dtype = dtype
        self.batch_size = int(batch_size)
        visual = model.visual
        cfg: dict[str, Any] = dict(getattr(visual, "preprocess_cfg", None) or {})
        self.image_size = _pair(cfg.get("size", getattr(visual, "image_size", 224)))
        self.mean = _triple(cfg.get("mean", getattr(visual, "image_mean", None) or (0.5,)))
        self.std = _triple(cfg.get("std", getattr(visual, "image_std", None) or (0.5,)))
        self.logit_scale = float(model.logit_scale.detach().float().exp().reshape(-1)[0])
        bias = getattr(model, "logit_bias", None)
        self.logit_bias = None if bias is None else float(bias.detach().float().reshape(-1)[0])
        self._crop_settings = CropSettings(style=crop_style, margin=crop_margin)
        self.fill_color = mean_fill_color(self.mean)
        self._text = TextEncoder(model, tokenizer, templates, self.device, text_batch_size)
        self._mean_t = torch.tensor(self.mean, device=self.device).view(1, 3, 1, 1) * 255.0
        self._std_t = torch.tensor(self.std, device=self.device).view(1, 3, 1, 1) * 255.0
        self.embed_dim = self._find_embed_dim()

    def __repr__(self) -> str:
        return (
            f"ClipScorer(spec={self.spec!r}, device={self.device}, dtype={self.dtype}, "
            f"embed_dim={self.embed_dim}, image_size={self.image_size}, "
            f"crop_style={self.crop_style!r})"
        )

    # ----------------------------------------------------------------- settings
    @property
    def crop_style(self) -> CropStyle:
        """How regions are cropped: ``"masked"``, ``"box"`` or ``"blur"`` (settable)."""
        return self._crop_settings.style

    @crop_style.setter
    def crop_style(self, style: CropStyle) -> None:
        self._crop_settings = dataclasses.replace(self._crop_settings, style=style)

    @property
    def crop_settings(self) -> CropSettings:
        """The full crop geometry and style (settable)."""
        return self._crop_settings

    @crop_settings.setter
    def crop_settings(self, settings: CropSettings) -> None:
        if not isinstance(settings, CropSettings):
            raise TypeError(f"crop_settings must be a CropSettings, got {type(settings).__name__}.")
        self._crop_settings = settings

    @property
    def templates(self) -> tuple[str, ...]:
        """The prompt templates averaged for every phrase."""
        return self._text.templates

    @property
    def text_encoder(self) -> TextEncoder:
        """The cached text encoder."""
        return self._text

    def clear_text_cache(self) -> None:
        """Forget all cached phrase embeddings."""
        self._text.clear_cache()

    # --------------------------------------------------------------------- text
    def encode_text(self, phrases: Sequence[str]) -> torch.Tensor:
        """Embed phrases (prompt templates averaged, cached per phrase).

        Args:
            phrases: ``P`` non-empty strings.

        Returns:
            ``(P, D)`` float32 L2-normalised embeddings on ``device``.
        """
        return self._text.encode(phrases)

    # ------------------------------------------------------------------ regions
    def encode_regions(
        self,
        image: torch.Tensor,
        boxes: torch.Tensor,
        masks: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Embed image regions, cropping on the device in batches of ``batch_size``.

        Args:
            image: ``(3, H, W)`` uint8 RGB tensor (moved to ``device`` if elsewhere).
            boxes: ``(N, 4)`` float boxes, xyxy in original image pixels.
            masks: ``(N, h, w)`` bool masks in a low-resolution frame of the whole image (any
                ``h, w``, e.g. longest side 256; scaled to ``H, W``), or None (box crops).

        Returns:
            ``(N, D)`` float32 L2-normalised embeddings on ``device``.
        """
        return self._run_regions(image, boxes, masks, encode=True)

    def region_pixels(
        self,
        image: torch.Tensor,
        boxes: torch.Tensor,
        masks: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The normalised model inputs :meth:`encode_regions` would feed to the image tower.

        Args:
            image: ``(3, H, W)`` uint8 RGB tensor.
            boxes: ``(N, 4)`` float boxes, xyxy in original image pixels.
            masks: ``(N, h, w)`` bool low-resolution masks of the whole image, or None.

        Returns:
            ``(N, 3, image_size[0], image_size[1])`` float32 normalised pixels on ``device``.
        """
        return self._run_regions(image, boxes, masks, encode=False)

    @torch.no_grad()
    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """Run the image tower on already normalised pixels, in batches of ``batch_size``.

        Args:
            pixels: ``(B, 3, h, w)`` float normalised model inputs (e.g. open_clip's eval
                transform of reference crops, stacked).

        Returns:
            ``(B, D)`` float32 L2-normalised embeddings on ``device``.
        """
        if pixels.ndim != 4 or pixels.shape[1] != 3:
            raise ValueError(f"pixels must be (B, 3, h, w), got {tuple(pixels.shape)}.")
        out = torch.empty(
            (pixels.shape[0], self.embed_dim), dtype=torch.float32, device=self.device
        )
        for start in range(0, pixels.shape[0], self.batch_size):
            chunk = pixels[start : start + self.batch_size].to(self.device, self.dtype)
            out[start : start + chunk.shape[0]] = self._forward_image(chunk)
        return out

    def reference_crop(
        self,
        image: np.ndarray,
        box: np.ndarray | Sequence[float] | torch.Tensor,
        mask: np.ndarray | None = None,
    ) -> Image.Image:
        """The PIL crop of one region, made the same geometric way as :meth:`encode_regions`.

        ``scorer.preprocess(scorer.reference_crop(...))`` is the per-crop reference input.

        Args:
            image: ``(H, W, 3)`` uint8 RGB array.
            box: xyxy box in original image pixels.
            mask: ``(H, W)`` bool mask, a low-resolution mask of the whole image, or None.

        Returns:
            The region crop as a PIL image (region size, not resized).
        """
        settings = self._crop_settings
        return make_region_crop_pil(
            image,
            box,
            mask,
            settings.style,
            out_size=self.image_size,
            margin=settings.margin,
            min_size=settings.min_size,
            blur_sigma=settings.blur_sigma,
            fill=self.fill_color,
        )

    # ---------------------------------------------------------------- internals
    def _forward_image(self, pixels: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.model.encode_image(pixels).float(), dim=-1)

    def _find_embed_dim(self) -> int:
        dim = getattr(self.model.visual, "output_dim", None)
        if isinstance(dim, int) and dim > 0:
            return dim
        with torch.no_grad():  # unusual tower: ask it
            probe = torch.zeros((1, 3, *self.image_size), device=self.device, dtype=self.dtype)
            return int(self.model.encode_image(probe).shape[-1])

    def _check_region_inputs(
        self, image: torch.Tensor, boxes: torch.Tensor, masks: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        if not isinstance(image, torch.Tensor) or image.ndim != 3 or image.shape[0] != 3:
            shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image)
            raise ValueError(f"image must be a (3, H, W) uint8 tensor, got {shape}.")
        if image.dtype != torch.uint8:
            raise ValueError(f"image must be uint8 (0-255), got {image.dtype}.")
        boxes = torch.as_tensor(boxes)
        if boxes.ndim != 2 or boxes.shape[1] != 4:
            raise ValueError(f"boxes must be (N, 4) xyxy, got {tuple(boxes.shape)}.")
        if masks is not None:
            if masks.ndim != 3 or masks.shape[0] != boxes.shape[0]:
                raise ValueError(
                    f"masks must be (N, h, w) with N = {boxes.shape[0]} boxes, "
                    f"got {tuple(masks.shape)}."
                )
        return image.to(self.device), boxes.to(self.device, torch.float32), masks

    @torch.no_grad()
    def _run_regions(
        self,
        image: torch.Tensor,
        boxes: torch.Tensor,
        masks: torch.Tensor | None,
        *,
        encode: bool,
    ) -> torch.Tensor:
        image, boxes, masks = self._check_region_inputs(image, boxes, masks)
        n = boxes.shape[0]
        out_h, out_w = self.image_size
        cropper = RegionCropper(self.image_size, self.fill_color, self._crop_settings)
        use_masks = masks is not None and self._crop_settings.style != "box"
        shape = (n, self.embed_dim) if encode else (n, 3, out_h, out_w)
        out = torch.empty(shape, dtype=torch.float32, device=self.device)
        if n == 0:
            return out
        source = cropper.prepare_image(image)
        regions = cropper.regions(boxes)
        image_hw = (int(image.shape[1]), int(image.shape[2]))
        for start in range(0, n, self.batch_size):
            stop = min(start + self.batch_size, n)
            chunk_masks = masks[start:stop].to(self.device) if use_masks else None
            crops = cropper.crop(source, image_hw, regions[start:stop], chunk_masks)
            pixels = (crops - self._mean_t) / self._std_t
            if encode:
                out[start:stop] = self._forward_image(pixels.to(self.dtype))
            else:
                out[start:stop] = pixels
        return out
