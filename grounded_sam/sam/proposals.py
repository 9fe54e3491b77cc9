"""Class-agnostic region proposals of one image, kept at the decoder's low resolution.

:class:`Proposals` is what "segment everything" (:mod:`grounded_sam.sam.everything`) produces
and what an image index keeps: the decoder's (N, L, L) logits of each proposal, the crop it was
decoded in, and the geometry that brings those logits to the image (:meth:`Proposals.full_masks`
at full resolution, :meth:`Proposals.frame_masks` in a small frame of the whole image).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from grounded_sam.utils.masks import uncrop_masks

__all__ = ["Proposals"]


@dataclass
class Proposals:
    """Class-agnostic region proposals of one image, at the decoder's low resolution.

    All tensors are on the predictor's device; N proposals, K crops (crop 0 = whole image).

    Attributes:
        low_res_logits: (N, L, L) float32 decoder logits, each in the padded input frame of
            its own crop.
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
        low_res_size: L, the side of the decoder's output.
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
    low_res_size: int
    _target_length: int = field(default=1024, repr=False)

    def __len__(self) -> int:
        return int(self.low_res_logits.shape[0])

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
            low_res_size=self.low_res_size,
            _target_length=self._target_length,
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
            gy = 2.0 * (ys[rows] - y0) * (ih / (y1 - y0)) / self._target_length - 1.0
            gx = 2.0 * (xs[cols] - x0) * (iw / (x1 - x0)) / self._target_length - 1.0
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

        Args:
            index: (M,) long indices; None for all.

        Returns:
            (M, H, W) bool.
        """
        from grounded_sam.sam.transforms import SamTransform

        props = self if index is None else self.select(index)
        H, W = self.original_size
        out = torch.zeros(len(props), H, W, dtype=torch.bool, device=props.low_res_logits.device)
        transform = SamTransform(props._target_length)
        for k in torch.unique(props.crop_index).tolist():
            sel = torch.nonzero(props.crop_index == k).flatten()
            x0, y0, x1, y1 = props.crop_boxes[k].tolist()
            logits = transform.postprocess_masks(
                props.low_res_logits[sel][:, None], props.crop_input_sizes[k], (y1 - y0, x1 - x0)
            )[:, 0]
            out[sel] = uncrop_masks(logits > 0, [x0, y0, x1, y1], H, W)
        return out
