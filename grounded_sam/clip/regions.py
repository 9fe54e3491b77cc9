"""Region crops for the CLIP image tower, made on the device in one batch.

Geometry (shared by the device path and the PIL reference path): every box is expanded by a
context margin, then to the aspect ratio of the model input (a square for all standard CLIP
models), rounded to whole pixels and centred on the box. Because the region already has the
model's aspect ratio, open_clip's eval transform (resize shortest side + centre crop) keeps the
whole region. Parts of the region outside the image are filled with the CLIP mean colour.

Crop styles:

* ``"masked"``: pixels outside the region's mask are replaced by the CLIP mean colour (which is
  zero after normalisation);
* ``"box"``: the plain region crop, the mask is not used;
* ``"blur"``: pixels outside the mask come from a Gaussian-blurred copy of the crop.

The device path samples every region straight from the one image tensor with
:func:`torchvision.ops.roi_align` (``aligned=True``, adaptive sampling: an area-averaging
resample that antialiases when shrinking), and samples each low-resolution mask the same way,
with edges sharpened to about one output pixel. No PIL, no per-crop host round trip.

Cost is independent of box size: adaptive sampling takes ``ceil(region side / output side)``
samples per output pixel and axis, so a 10000-pixel region would average ~45 x 45 bilinear
samples per output pixel. Regions more than :data:`MAX_SAMPLES_PER_AXIS` times larger than the
output are instead sampled from a 2x, 4x, ... area-averaged (box-filtered) copy of the image,
chosen per region so that at most ``MAX_SAMPLES_PER_AXIS`` samples per axis remain (the same
area filter, applied in two steps).

Masks get the same treatment in their low-resolution frame: a region that spans more than
:data:`MAX_MASK_SAMPLES_PER_AXIS` frame pixels per output pixel on some axis is sampled from a
2x, 4x, ... area-averaged copy of the frame. This bounds the work of degenerate images (a 1 x 1
image whose 256 x 256 frame maps 8 image pixels to 2048 frame pixels, a 1 x 20000 image whose
square regions span 24000 rows of a one-row frame), which would otherwise take thousands of
samples per output pixel: every region costs at most ``out_h * out_w *
(MAX_MASK_SAMPLES_PER_AXIS**2 + MAX_SAMPLES_PER_AXIS**2 + levels)`` bilinear samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

__all__ = [
    "CROP_STYLES",
    "CropSettings",
    "CropStyle",
    "RegionCropper",
    "gaussian_blur",
    "make_region_crop_pil",
    "mean_fill_color",
    "region_boxes",
]

CropStyle = Literal["masked", "box", "blur"]
CROP_STYLES: tuple[str, ...] = get_args(CropStyle)

_OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)

#: Most bilinear samples per output pixel and axis taken from one pyramid level.
MAX_SAMPLES_PER_AXIS = 4

#: Most bilinear samples per output pixel and axis taken from one level of the mask pyramid
#: (regions of ordinary images never need more than level 0; see the module docstring).
MAX_MASK_SAMPLES_PER_AXIS = 8


def mean_fill_color(mean: tuple[float, ...] | list[float] = _OPENAI_MEAN) -> tuple[int, int, int]:
    """The uint8 RGB colour used for background and padding: the model's mean pixel.

    Args:
        mean: Per-channel normalisation mean in [0, 1] (open_clip ``preprocess_cfg["mean"]``); a
            single value is used for all three channels.

    Returns:
        ``(r, g, b)`` integers in [0, 255].
    """
    values = list(mean) if len(mean) == 3 else [float(mean[0])] * 3
    r, g, b = (int(round(min(max(float(v), 0.0), 1.0) * 255.0)) for v in values)
    return r, g, b


@dataclass(frozen=True)
class CropSettings:
    """How a region is cropped for CLIP.

    Attributes:
        style: ``"masked"``, ``"box"`` or ``"blur"`` (see the module docstring).
        margin: Context added on every side of the box, as a fraction of the box's longer side.
        min_size: Smallest region side in pixels (tiny boxes get some context).
        blur_sigma: Gaussian sigma of the ``"blur"`` background, as a fraction of the crop side.
    """

    style: CropStyle = "masked"
    margin: float = 0.1
    min_size: float = 8.0
    blur_sigma: float = 0.04

    def __post_init__(self) -> None:
        if self.style not in CROP_STYLES:
            raise ValueError(f"Unknown crop style {self.style!r}: use one of {CROP_STYLES}.")
        if not (0.0 <= float(self.margin) <= 10.0):
            raise ValueError(f"Crop margin must be in [0, 10], got {self.margin!r}.")
        if not float(self.min_size) >= 1.0:
            raise ValueError(f"Crop min_size must be >= 1 pixel, got {self.min_size!r}.")
        if not float(self.blur_sigma) > 0.0:
            raise ValueError(f"Crop blur_sigma must be > 0, got {self.blur_sigma!r}.")


def region_boxes(
    boxes: torch.Tensor,
    out_size: tuple[int, int],
    margin: float = 0.1,
    min_size: float = 8.0,
) -> torch.Tensor:
    """Crop regions for boxes: context margin, model aspect ratio, whole pixels, box-centred.

    Args:
        boxes: ``(N, 4)`` float boxes, xyxy in original image pixels.
        out_size: ``(height, width)`` of the model input; sets the region's aspect ratio.
        margin: Context on every side as a fraction of the box's longer side.
        min_size: Smallest region height in pixels.

    Returns:
        ``(N, 4)`` float32 regions, xyxy in original pixels, integer-valued (may extend past
        the image borders). Same device as ``boxes``.
    """
    boxes = boxes.to(torch.float32)
    x0, y0, x1, y1 = boxes.unbind(-1)
    w = (x1 - x0).clamp_min(0.0)
    h = (y1 - y0).clamp_min(0.0)
    pad = float(margin) * torch.maximum(w, h)
    out_h, out_w = out_size
    aspect = out_w / out_h
    rh = torch.maximum(h + 2 * pad, (w + 2 * pad) / aspect).clamp_min(float(min_size))
    rw = (rh * aspect).round().clamp_min(1.0)
    rh = rh.round().clamp_min(1.0)
    rx0 = ((x0 + x1) * 0.5 - rw * 0.5).round()
    ry0 = ((y0 + y1) * 0.5 - rh * 0.5).round()
    return torch.stack([rx0, ry0, rx0 + rw, ry0 + rh], dim=-1)


class RegionCropper:
    """Makes CLIP input crops for many regions of one image, batched on the image's device.

    Args:
        out_size: ``(height, width)`` of the model input, e.g. ``(224, 224)``.
        fill: uint8 RGB background/padding colour (normally :func:`mean_fill_color`).
        settings: Crop geometry and style.
    """

    def __init__(
        self,
        out_size: tuple[int, int],
        fill: tuple[int, int, int],
        settings: CropSettings | None = None,
    ) -> None:
        self.out_size = (int(out_size[0]), int(out_size[1]))
        self.fill = tuple(int(c) for c in fill)
        self.settings = settings or CropSettings()
        self._pyramid: tuple[torch.Tensor, list[torch.Tensor]] | None = None

    def regions(self, boxes: torch.Tensor) -> torch.Tensor:
        """``(N, 4)`` xyxy boxes -> ``(N, 4)`` xyxy crop regions (see :func:`region_boxes`)."""
        return region_boxes(boxes, self.out_size, self.settings.margin, self.settings.min_size)

    def prepare_image(self, image: torch.Tensor) -> torch.Tensor:
        """Turn the uint8 image into the sampling source used by :meth:`crop` (done once per image).

        Args:
            image: ``(3, H, W)`` uint8 RGB tensor.

        Returns:
            ``(1, 3, H + 2, W + 2)`` float32: the image minus the fill colour, with a one-pixel
            zero border, so that anything sampled outside the image becomes the fill colour
            whichever ``roi_align`` implementation runs.
        """
        _, h, w = image.shape
        fill = torch.tensor(self.fill, dtype=torch.float32, device=image.device).view(3, 1, 1)
        source = torch.zeros((1, 3, h + 2, w + 2), dtype=torch.float32, device=image.device)
        source[0, :, 1:-1, 1:-1] = image.to(torch.float32) - fill
        return source

    def crop(
        self,
        source: torch.Tensor,
        image_size: tuple[int, int],
        regions: torch.Tensor,
        masks: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Sample crops for a batch of regions.

        Args:
            source: Output of :meth:`prepare_image`.
            image_size: ``(H, W)`` of the original image.
            regions: ``(n, 4)`` float32 xyxy regions in original pixels (from :meth:`regions`),
                on ``source``'s device.
            masks: ``(n, h, w)`` bool (or float in [0, 1]) masks in a low-resolution frame of the
                whole image (mask pixel ``(i, j)`` covers image pixels ``[j W/w, (j+1) W/w)`` x
                ``[i H/h, (i+1) H/h)``), or None. Unused for style ``"box"``; None means "box".

        Returns:
            ``(n, 3, out_h, out_w)`` float32 RGB crops in [0, 255] (not normalised).
        """
        n = regions.shape[0]
        out_h, out_w = self.out_size
        device = source.device
        fill = torch.tensor(self.fill, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        if n == 0:
            return torch.empty((0, 3, out_h, out_w), dtype=torch.float32, device=device)
        offset = self._sample_image(source, image_size, regions.to(torch.float32))
        if self.settings.style == "box" or masks is None:
            return offset + fill
        if masks.shape[0] != n:
            raise ValueError(f"Got {masks.shape[0]} masks for {n} regions.")
        alpha = self._sample_masks(masks.to(device), image_size, regions)
        if self.settings.style == "masked":
            return fill + offset * alpha
        base = offset + fill
        blurred = gaussian_blur(base, float(self.settings.blur_sigma) * max(out_h, out_w))
        return blurred + (base - blurred) * alpha

    def top_level(self, image_size: tuple[int, int]) -> int:
        """Highest pyramid level a region of this image can need.

        Regions span at most the image plus the context margin on each side.
        """
        out_h, out_w = self.out_size
        side = max(image_size) * (1.0 + 2.0 * float(self.settings.margin)) + 2.0
        ratio = max(side, float(self.settings.min_size)) / min(out_h, out_w)
        return max(0, math.ceil(math.log2(max(ratio / MAX_SAMPLES_PER_AXIS, 1.0))))

    def pyramid_levels(self, regions: torch.Tensor, top: int) -> torch.Tensor:
        """``(n,)`` long: the pyramid level each region is sampled from (0 = full size).

        Level ``k`` is the image box-filtered by ``2**k``; a region uses the smallest level at
        which it spans at most :data:`MAX_SAMPLES_PER_AXIS` source pixels per output pixel
        (at most ``top``).
        """
        out_h, out_w = self.out_size
        ratio = torch.maximum(
            (regions[:, 2] - regions[:, 0]) / out_w, (regions[:, 3] - regions[:, 1]) / out_h
        )
        level = torch.ceil(torch.log2((ratio / MAX_SAMPLES_PER_AXIS).clamp_min(1.0)))
        return level.clamp(0, top).to(torch.long)

    def _levels(self, source: torch.Tensor, top: int) -> list[torch.Tensor]:
        """Pyramid of ``source`` up to level ``top`` (cached for the last source seen).

        Each level is the previous one (without its zero border) padded with zeros (the fill
        colour) to even size and averaged over 2x2 blocks, then given a zero border again: pixel
        ``j`` of level ``k`` covers original pixels ``[j 2**k, (j + 1) 2**k)`` exactly.
        """
        if self._pyramid is None or self._pyramid[0] is not source:
            self._pyramid = (source, [source])
        levels = self._pyramid[1]
        while len(levels) <= top:
            inner = levels[-1][:, :, 1:-1, 1:-1]
            h, w = inner.shape[-2:]
            inner = F.pad(inner, (0, w % 2, 0, h % 2))
            levels.append(F.pad(F.avg_pool2d(inner, 2), (1, 1, 1, 1)))
        return levels

    def _sample_image(
        self, source: torch.Tensor, image_size: tuple[int, int], regions: torch.Tensor
    ) -> torch.Tensor:
        """``(n, 3, out_h, out_w)`` offsets from the fill colour, each region from its level.

        One ``roi_align`` per level over all regions, with the regions of other levels
        replaced by a one-pixel box (one sample per output pixel), so that nothing is pulled
        to the host; images whose regions all fit level 0 take exactly one call.
        """
        from torchvision.ops import roi_align  # lazy: torchvision.ops imports torch._dynamo

        n = regions.shape[0]
        top = self.top_level(image_size)
        levels = self._levels(source, top)
        index = torch.zeros((n, 1), dtype=torch.float32, device=source.device)
        if top == 0:
            rois = torch.cat([index, regions + 1.0], dim=1)  # +1: the zero border
            return roi_align(
                source, rois, self.out_size, spatial_scale=1.0, sampling_ratio=-1, aligned=True
            )
        level = self.pyramid_levels(regions, top)
        dummy = torch.tensor([[0.0, 0.0, 0.0, 1.0, 1.0]], device=source.device)
        out = torch.zeros((n, 3, *self.out_size), dtype=torch.float32, device=source.device)
        for k in range(top + 1):
            here = (level == k).view(n, 1)
            rois = torch.where(here, torch.cat([index, regions / float(2**k) + 1.0], 1), dummy)
            sampled = roi_align(
                levels[k], rois, self.out_size, spatial_scale=1.0, sampling_ratio=-1, aligned=True
            )
            out = torch.where(here.view(n, 1, 1, 1), sampled, out)
        return out

    def _sample_masks(
        self, masks: torch.Tensor, image_size: tuple[int, int], regions: torch.Tensor
    ) -> torch.Tensor:
        """``(n, h, w)`` masks -> ``(n, 1, out_h, out_w)`` float alpha in [0, 1].

        The mask is sampled like the image (bilinear samples averaged per output pixel). When
        the mask frame is coarser than the crop (one mask pixel spans several output pixels),
        the bilinear ramp would smear the edge over all of them; it is sharpened so that the
        edge lies on the 0.5 contour and is about one output pixel wide, as if the mask had
        been upsampled and thresholded at full resolution. No border padding: a mask touching
        the image border stays solid up to the border; what it returns further outside does
        not matter, since the image part there is already the fill colour.
        """
        n, mh, mw = masks.shape
        img_h, img_w = image_size
        out_h, out_w = self.out_size
        frame = masks.to(torch.float32).unsqueeze(1)
        scale = torch.tensor(
            [mw / img_w, mh / img_h, mw / img_w, mh / img_h],
            dtype=torch.float32,
            device=regions.device,
        )
        index = torch.arange(n, dtype=torch.float32, device=regions.device).unsqueeze(1)
        scaled = regions.to(torch.float32) * scale
        from torchvision.ops import roi_align

        top = self.mask_top_level(image_size, (mh, mw))
        if top == 0:
            coverage = roi_align(
                frame, torch.cat([index, scaled], dim=1), self.out_size,
                spatial_scale=1.0, sampling_ratio=-1, aligned=True,
            )  # fmt: skip
        else:
            ratio = torch.maximum(
                (scaled[:, 2] - scaled[:, 0]) / out_w, (scaled[:, 3] - scaled[:, 1]) / out_h
            )
            level = torch.ceil(torch.log2((ratio / MAX_MASK_SAMPLES_PER_AXIS).clamp_min(1.0)))
            level = level.clamp(0, top).to(torch.long).view(n, 1)
            corner = torch.tensor([[0.0, 0.0, 1.0, 1.0]], device=regions.device)
            dummy = torch.cat([index, corner.expand(n, 4)], 1)  # one sample per output pixel
            coverage = torch.zeros((n, 1, out_h, out_w), dtype=torch.float32, device=frame.device)
            for k, pooled in enumerate(_mask_levels(frame, top)):
                here = level == k
                rois = torch.where(here, torch.cat([index, scaled / float(2**k)], 1), dummy)
                sampled = roi_align(
                    pooled, rois, self.out_size, spatial_scale=1.0, sampling_ratio=-1, aligned=True
                )
                coverage = torch.where(here.view(n, 1, 1, 1), sampled, coverage)
        # output pixels per mask pixel (> 1 when the mask is upsampled), per region; a region
        # sampled from a coarser level spans more than one frame pixel per output pixel, so its
        # zoom is 1 at every level
        zoom = torch.minimum(
            out_w / (scaled[:, 2] - scaled[:, 0]), out_h / (scaled[:, 3] - scaled[:, 1])
        ).clamp_min(1.0)
        return ((coverage - 0.5) * zoom.view(n, 1, 1, 1) + 0.5).clamp_(0.0, 1.0)

    def mask_top_level(self, image_size: tuple[int, int], frame_size: tuple[int, int]) -> int:
        """Highest mask-pyramid level a region of this image can need (0: no pyramid).

        Regions span at most the image plus the context margin on each side (and at least
        ``min_size``), i.e. ``side * frame / image`` frame pixels on each axis.

        Args:
            image_size: ``(H, W)`` of the image.
            frame_size: ``(h, w)`` of the low-resolution mask frame.
        """
        out_h, out_w = self.out_size
        img_h, img_w = image_size
        side = max(image_size) * (1.0 + 2.0 * float(self.settings.margin)) + 2.0
        side = max(side, float(self.settings.min_size)) * max(out_w / out_h, out_h / out_w)
        span = max(side * frame_size[0] / img_h, side * frame_size[1] / img_w)
        ratio = span / min(out_h, out_w)
        return max(0, math.ceil(math.log2(max(ratio / MAX_MASK_SAMPLES_PER_AXIS, 1.0))))


def _mask_levels(frame: torch.Tensor, top: int) -> list[torch.Tensor]:
    """``[frame, frame / 2, ..., frame / 2**top]``: area averages over 2x2 blocks.

    Odd sizes are padded by repeating the last row / column (a mask touching the border stays
    solid up to it), so pixel ``j`` of level ``k`` covers frame pixels ``[j 2**k, (j + 1) 2**k)``.

    Args:
        frame: ``(n, 1, h, w)`` float32 mask coverage in [0, 1].
        top: Highest level.
    """
    levels = [frame]
    for _ in range(top):
        last = levels[-1]
        h, w = last.shape[-2:]
        if h % 2 or w % 2:
            last = F.pad(last, (0, w % 2, 0, h % 2), mode="replicate")
        levels.append(F.avg_pool2d(last, 2))
    return levels


def _blur_matrix(size: int, sigma: float, radius: int, device: torch.device) -> torch.Tensor:
    """``(size, size)`` matrix ``M``: ``x @ M`` is the 1-D Gaussian blur of ``x`` (reflect)."""
    taps = torch.arange(-radius, radius + 1, device=device)
    weights = torch.exp(-0.5 * (taps.to(torch.float32) / max(float(sigma), 1e-6)) ** 2)
    weights = weights / weights.sum()
    out_index = torch.arange(size, device=device)[:, None].expand(size, taps.numel())
    source = (out_index + taps[None, :]).abs()  # reflect at 0 (edge pixel not repeated)
    source = torch.where(source > size - 1, 2 * (size - 1) - source, source)
    matrix = torch.zeros((size, size), dtype=torch.float32, device=device)
    matrix.index_put_(
        (source.reshape(-1), out_index.reshape(-1)),
        weights.expand(size, -1).reshape(-1),
        accumulate=True,
    )
    return matrix


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur with reflect borders, as two small matrix products.

    The kernel has radius ``ceil(3 sigma)`` (capped at the image size minus one), is sampled
    from the Gaussian and normalised; borders reflect without repeating the edge pixel (like
    OpenCV's ``BORDER_REFLECT_101``). Matrix products keep it fast on CPU and GPU.

    Args:
        images: ``(B, C, H, W)`` float32 tensor.
        sigma: Standard deviation in pixels.

    Returns:
        The blurred ``(B, C, H, W)`` float32 tensor.
    """
    h, w = images.shape[-2:]
    if h < 2 or w < 2:
        return images.clone()
    radius = max(1, int(np.ceil(3.0 * float(sigma))))
    blur_w = _blur_matrix(w, sigma, min(radius, w - 1), images.device)
    blur_h = _blur_matrix(h, sigma, min(radius, h - 1), images.device)
    return blur_h.T @ (images.to(torch.float32) @ blur_w)


def _full_res_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bring a mask of any frame to ``size = (H, W)``: bilinear upsampling, then >= 0.5."""
    mask = np.asarray(mask)
    if mask.shape == size:
        return mask.astype(bool)
    img = Image.fromarray(mask.astype(np.float32), mode="F")
    resized = np.asarray(img.resize((size[1], size[0]), Image.Resampling.BILINEAR))
    return resized >= 0.5


def make_region_crop_pil(
    image: np.ndarray,
    box: np.ndarray | list[float] | tuple[float, ...] | torch.Tensor,
    mask: np.ndarray | None,
    style: CropStyle = "masked",
    *,
    out_size: tuple[int, int] = (224, 224),
    margin: float = 0.1,
    min_size: float = 8.0,
    blur_sigma: float = 0.04,
    fill: tuple[int, int, int] | None = None,
) -> Image.Image:
    """Make one region crop on the CPU with PIL, the same geometric way as the device path.

    This is the per-crop reference path (tests, benchmarks, the reference pipeline). Feed the
    result to open_clip's eval transform. ``ClipScorer.reference_crop`` calls it with the model's
    own settings.

    Args:
        image: ``(H, W, 3)`` uint8 RGB array.
        box: xyxy box in original image pixels (4 numbers).
        mask: ``(H, W)`` bool mask of the object, or a mask in a low-resolution frame of the whole
            image (any ``(h, w)``; upsampled bilinearly and thresholded at 0.5), or None.
        style: ``"masked"``, ``"box"`` or ``"blur"``; None mask means ``"box"``.
        out_size: ``(height, width)`` of the model input (sets the aspect ratio only).
        margin: Context on every side as a fraction of the box's longer side.
        min_size: Smallest region side in pixels.
        blur_sigma: Gaussian sigma of the ``"blur"`` background, as a fraction of the crop side.
        fill: uint8 RGB background colour; the OpenAI CLIP mean colour by default.

    Returns:
        The RGB crop as a PIL image of the region's size (not resized to ``out_size``).
    """
    settings = CropSettings(style=style, margin=margin, min_size=min_size, blur_sigma=blur_sigma)
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be an HxWx3 uint8 array, got {image.shape} {image.dtype}.")
    fill = fill if fill is not None else mean_fill_color()
    img_h, img_w = image.shape[:2]
    box_t = torch.as_tensor(np.asarray(box, dtype=np.float32).reshape(1, 4))
    rx0, ry0, rx1, ry1 = (int(v) for v in region_boxes(box_t, out_size, margin, min_size)[0])
    canvas = np.empty((ry1 - ry0, rx1 - rx0, 3), dtype=np.uint8)
    canvas[:] = np.asarray(fill, dtype=np.uint8)
    # Intersection of the region with the image, in image and in canvas coordinates.
    ix0, iy0, ix1, iy1 = max(rx0, 0), max(ry0, 0), min(rx1, img_w), min(ry1, img_h)
    inside = np.zeros(canvas.shape[:2], dtype=bool)
    if ix1 > ix0 and iy1 > iy0:
        canvas[iy0 - ry0 : iy1 - ry0, ix0 - rx0 : ix1 - rx0] = image[iy0:iy1, ix0:ix1]
        if mask is not None:
            full = _full_res_mask(mask, (img_h, img_w))
            inside[iy0 - ry0 : iy1 - ry0, ix0 - rx0 : ix1 - rx0] = full[iy0:iy1, ix0:ix1]
    if settings.style == "box" or mask is None:
        return Image.fromarray(canvas)
    if settings.style == "masked":
        background = np.empty_like(canvas)
        background[:] = np.asarray(fill, dtype=np.uint8)
    else:
        sigma = settings.blur_sigma * max(canvas.shape[0], canvas.shape[1])
        blurred = gaussian_blur(torch.from_numpy(canvas).permute(2, 0, 1)[None].float(), sigma)
        background = blurred[0].round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(np.where(inside[..., None], canvas, background))
