"""Class-agnostic region proposals of one image, kept at the decoder's low resolution.

:class:`Proposals` is what "segment everything" (:mod:`grounded_sam.sam.everything`) produces
and what an image index keeps: the decoder's (N, L, L) logits of each proposal, the crop it was
decoded in, and the :class:`MaskFrame` that brings those logits to the image
(:meth:`Proposals.full_masks` at full resolution, :meth:`Proposals.frame_masks` in a small
frame of the whole image).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch
import torch.nn.functional as F

from grounded_sam.utils.masks import uncrop_masks

if TYPE_CHECKING:
    from grounded_sam.sam.transforms import SamTransform

__all__ = ["MaskFrame", "Proposals", "UPSCALE_CHUNK_BYTES", "UPSCALE_MODES"]

#: How a family's low-res logits are brought to an image (see :class:`MaskFrame`).
UPSCALE_MODES = ("pad_crop", "resize")

#: Float logits :meth:`Proposals.full_masks` upscales at once (bytes): 256 MiB, 63 SAM masks
#: of a 1024 x 1024 frame. Measured on a CPU (120 masks, 640 x 480): as fast as upscaling all
#: at once (1.2 s); 64 MiB chunks were ~25 % slower, 16 MiB ~2x.
UPSCALE_CHUNK_BYTES = 256 << 20


@dataclass(frozen=True)
class MaskFrame:
    """How the mask decoder's low-res logits map onto an image: the frame of one SAM family.

    The image encoder sees a square T x T input frame; the decoder answers with L x L logits
    covering that whole frame (L = T / 4 for the released models). An image (or crop) of
    (h, w) pixels is resized into the frame to its ``input_size``, and its logits come back to
    (h, w) in one of two ways, as the family's own predictor upscales them:

    * ``"pad_crop"``: SAM and HQ-SAM keep the aspect ratio (``input_size`` has a longest side
      of T) and zero-pad the frame at the bottom/right, so logits are resized to T x T, cropped
      to ``input_size`` and resized to (h, w): two bilinear steps, as Meta's ``SamPredictor``.
    * ``"resize"``: SAM 2 stretches the image over the whole frame (``input_size`` = (T, T),
      no padding), so logits are resized straight to (h, w): one bilinear step, as Meta's
      ``SAM2ImagePredictor``.

    Build it with :meth:`of` from a predictor's transform; :meth:`upscale_logits` is then
    exactly that transform's ``postprocess_masks``.

    Attributes:
        target_length: T, side of the square input frame in pixels.
        low_res_size: L, side of the decoder's logits.
        upscale: ``"pad_crop"`` or ``"resize"`` as above.
    """

    target_length: int = 1024
    low_res_size: int = 256
    upscale: Literal["pad_crop", "resize"] = "pad_crop"

    def __post_init__(self) -> None:
        for name in ("target_length", "low_res_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"MaskFrame.{name} must be an integer >= 1, got {value!r}.")
        if self.upscale not in UPSCALE_MODES:
            raise ValueError(
                f"MaskFrame.upscale must be one of {UPSCALE_MODES}, got {self.upscale!r}."
            )

    @classmethod
    def of(cls, transform: SamTransform) -> MaskFrame:
        """The frame of a predictor's transform (``predictor.transform``).

        A transform whose frame keeps the aspect ratio pads it, and its logits are cropped
        (``"pad_crop"``); one that stretches a non-square image over the whole frame has no
        padding, and its logits are resized in one step (``"resize"``).

        Args:
            transform: A :class:`~grounded_sam.sam.transforms.SamTransform` (or subclass) with
                ``target_length``, ``low_res_size`` and ``input_size(original_size)``.
        """
        side = int(transform.target_length)
        stretched = tuple(transform.input_size((1, 2))) == (side, side)
        return cls(
            target_length=side,
            low_res_size=int(transform.low_res_size),
            upscale="resize" if stretched else "pad_crop",
        )

    def upscale_logits(
        self, low_res: torch.Tensor, input_size: tuple[int, int], size: tuple[int, int]
    ) -> torch.Tensor:
        """Bring decoder logits to the pixels of the image (or crop) they were decoded for.

        Args:
            low_res: (B, C, L, L) logits.
            input_size: (h', w') of the image resized into the input frame.
            size: (h, w) of the image (or crop) in original pixels.

        Returns:
            (B, C, h, w) float32 logits.
        """
        x = low_res.float()
        if self.upscale == "pad_crop":
            side = self.target_length
            x = F.interpolate(x, (side, side), mode="bilinear", align_corners=False)
            x = x[..., : input_size[0], : input_size[1]]
        return F.interpolate(x, size, mode="bilinear", align_corners=False)

    def upscale_bytes(self, size: tuple[int, int]) -> int:
        """Bytes of float32 logits :meth:`upscale_logits` holds per mask for an (h, w) output."""
        frame = self.target_length**2 if self.upscale == "pad_crop" else 0
        return 4 * (frame + int(size[0]) * int(size[1]))

    def grid_coords(self, coords: torch.Tensor, input_extent: int, extent: int) -> torch.Tensor:
        """Normalised low-res coordinates (``grid_sample``, ``align_corners=False``) of pixels.

        Args:
            coords: (P,) positions along one axis, in pixels of the image (or crop).
            input_extent: That axis's length in the input frame (h' or w').
            extent: That axis's length in the image (or crop), h or w.

        Returns:
            (P,) float, -1 and 1 being the outer edges of the L x L logits (= of the frame).
        """
        return 2.0 * coords * (input_extent / extent) / self.target_length - 1.0


@dataclass
class Proposals:
    """Class-agnostic region proposals of one image, at the decoder's low resolution.

    All tensors are on the predictor's device; N proposals, K crops (crop 0 = whole image).

    Attributes:
        low_res_logits: (N, L, L) float32 decoder logits, each in the input frame of its own
            crop (see ``frame``).
        crop_index: (N,) long, the crop each proposal was decoded in.
        crop_boxes: (K, 4) long xyxy crops in original pixels (end exclusive).
        crop_input_sizes: Per crop, the (h, w) of the crop resized into the input frame.
        boxes: (N, 4) float32 xyxy boxes in original pixels, inclusive (last pixel inside),
            from the low-res masks (within about one low-res pixel of the full mask's box).
        predicted_iou: (N,) float32 SAM's predicted IoU.
        stability_score: (N,) float32 stability score, counted on a 2x sub-pixel grid of the
            low-res logits.
        point_coords: (N, 2) float32 xy of the grid point that produced each mask.
        original_size: (H, W) of the image.
        frame: How the logits map onto the image (:class:`MaskFrame`, from the predictor's
            transform); ``frame.low_res_size`` is L.
    """

    low_res_logits: torch.Tensor
    crop_index: torch.Tensor
    crop_boxes: torch.Tensor
    crop_input_sizes: list[tuple[int, int]]
    boxes: torch.Tensor
    predicted_iou: torch.Tensor
    stability_score: torch.Tensor
    point_coords: torch.Tensor
    original_size: tuple[int, int]
    frame: MaskFrame

    def __len__(self) -> int:
        return int(self.low_res_logits.shape[0])

    @property
    def low_res_size(self) -> int:
        """L, the side of the decoder's logits (``frame.low_res_size``)."""
        return self.frame.low_res_size

    def select(self, index: torch.Tensor) -> Proposals:
        """Proposals at ``index`` ((M,) long or (N,) bool), crops unchanged."""
        return Proposals(
            low_res_logits=self.low_res_logits[index],
            crop_index=self.crop_index[index],
            crop_boxes=self.crop_boxes,
            crop_input_sizes=self.crop_input_sizes,
            boxes=self.boxes[index],
            predicted_iou=self.predicted_iou[index],
            stability_score=self.stability_score[index],
            point_coords=self.point_coords[index],
            original_size=self.original_size,
            frame=self.frame,
        )

    def frame_size(self, longest_side: int | None = None) -> tuple[int, int]:
        """Size (h, w) of a low-res frame of the whole image with the given longest side.

        Args:
            longest_side: Defaults to L (the decoder's resolution).
        """
        side = longest_side or self.low_res_size
        h, w = self.original_size
        scale = side / max(h, w)
        return max(1, round(h * scale)), max(1, round(w * scale))

    def frame_masks(self, size: tuple[int, int] | None = None) -> torch.Tensor:
        """Masks of all proposals in one low-res frame of the whole image.

        Each frame pixel samples its proposal's low-res logits (bilinear) at the pixel's
        centre, mapped through the same geometry as :meth:`full_masks` (crop offset, resize
        into the input frame, decoder stride), so the result is the full-resolution mask seen
        at the frame's resolution; pixels outside a proposal's crop are False.

        Args:
            size: (h, w) of the frame; defaults to :meth:`frame_size`.

        Returns:
            (N, h, w) bool; frame pixel (i, j) covers original pixels
            [i * H/h, (i + 1) * H/h) x [j * W/w, (j + 1) * W/w).
        """
        fh, fw = size or self.frame_size()
        device = self.low_res_logits.device
        out = torch.zeros(len(self), fh, fw, dtype=torch.bool, device=device)
        if len(self) == 0:
            return out
        H, W = self.original_size
        # centres of the frame pixels, in original pixels
        ys = (torch.arange(fh, device=device, dtype=torch.float32) + 0.5) * (H / fh)
        xs = (torch.arange(fw, device=device, dtype=torch.float32) + 0.5) * (W / fw)
        for k in torch.unique(self.crop_index).tolist():
            sel = torch.nonzero(self.crop_index == k).flatten()
            x0, y0, x1, y1 = self.crop_boxes[k].tolist()
            rows = torch.nonzero((ys >= y0) & (ys < y1)).flatten()
            cols = torch.nonzero((xs >= x0) & (xs < x1)).flatten()
            if rows.numel() == 0 or cols.numel() == 0:
                continue
            ih, iw = self.crop_input_sizes[k]
            # crop pixel -> input-frame pixel (resize) -> normalised low-res coordinate
            # (grid_sample with align_corners=False: -1 and 1 are the outer edges).
            gy = self.frame.grid_coords(ys[rows] - y0, ih, y1 - y0)
            gx = self.frame.grid_coords(xs[cols] - x0, iw, x1 - x0)
            grid = torch.stack(torch.meshgrid(gx, gy, indexing="xy"), dim=-1)  # (h, w, 2)
            logits = self.low_res_logits[sel].float()[:, None]
            sampled = F.grid_sample(
                logits,
                grid[None].expand(len(sel), -1, -1, -1),
                mode="bilinear",
                padding_mode="border",
                align_corners=False,
            )[:, 0]
            r0, r1 = int(rows[0]), int(rows[-1]) + 1
            c0, c1 = int(cols[0]), int(cols[-1]) + 1
            out[sel, r0:r1, c0:c1] = sampled > 0
        return out

    def full_masks(self, index: torch.Tensor | None = None) -> torch.Tensor:
        """Masks at the original image size (computed only for the proposals asked for).

        Each proposal's logits are upscaled to its crop by :meth:`MaskFrame.upscale_logits`
        (exactly the predictor's own upscaling: one bilinear step for SAM 2, two for SAM) and
        pasted into the image. Proposals are upscaled a few at a time, so that the float
        logits in flight stay under :data:`UPSCALE_CHUNK_BYTES` however many are asked for
        (all at once, 3072 SAM masks would need 12.9 GB of 1024 x 1024 float frames); the
        returned bool masks are the caller's to bound (``limits.MAX_MASK_PIXELS``).

        Args:
            index: (M,) long indices; None for all.

        Returns:
            (M, H, W) bool.
        """
        props = self if index is None else self.select(index)
        H, W = self.original_size
        out = torch.zeros(len(props), H, W, dtype=torch.bool, device=props.low_res_logits.device)
        for k in torch.unique(props.crop_index).tolist():
            sel = torch.nonzero(props.crop_index == k).flatten()
            x0, y0, x1, y1 = props.crop_boxes[k].tolist()
            size = (y1 - y0, x1 - x0)
            per_mask = props.frame.upscale_bytes(size)
            for part in sel.split(max(1, UPSCALE_CHUNK_BYTES // per_mask)):
                logits = props.frame.upscale_logits(
                    props.low_res_logits[part][:, None], props.crop_input_sizes[k], size
                )[:, 0]
                out[part] = uncrop_masks(logits > 0, [x0, y0, x1, y1], H, W)
        return out
