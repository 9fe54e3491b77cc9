"""Stability scores of low-res mask logits, counted on a sub-pixel grid without upsampling.

SAM's stability score of a mask is the IoU of the mask thresholded at ``threshold + offset``
and at ``threshold - offset`` (:func:`grounded_sam.utils.masks.stability_score`). Meta counts
it on the full-resolution mask; "segment everything" here filters at the decoder's low
resolution, so the score is counted on a ``SUBPIXELS``x bilinear upsample of the (N, L, L)
logits, one phase (sub-pixel offset) at a time so that no upsampled tensor is ever held.
"""

from __future__ import annotations

import torch

__all__ = ["SUBPIXELS", "subpixel_stability", "upsample_phases"]

# Stability scores are measured on this many sub-pixels per low-res pixel side: on the
# bilinear upsample (align_corners=False) of the decoder logits, computed phase by phase so
# that no upsampled tensor is ever held. Counting the bare L x L pixels over-estimates
# stability wherever logits change fast between neighbouring pixels (measured on tiny random
# models against Meta's full-resolution score: mean error 0.01-0.12, max 0.1-0.39); 2
# sub-pixels bring it to a mean of ~0.002-0.02 (max 0.02-0.09) at ~6x the cost of the bare
# count on a CPU (still ~1/6 of upsampling to the input frame, as Meta does). 1 = bare count.
SUBPIXELS = 2


def upsample_phases(x: torch.Tensor, factor: int, dim: int) -> list[torch.Tensor]:
    """Phases of a ``factor``x bilinear upsample (align_corners=False) along ``dim``.

    Phase ``a`` holds the upsampled elements ``factor * i + a``; interleaving the phases gives
    ``F.interpolate(..., scale_factor=factor, mode="bilinear")`` along that axis, including its
    edge clamping (the outermost half sub-pixels repeat the edge element).
    """
    n = x.shape[dim]
    phases = []
    for a in range(factor):
        shift = (a + 0.5) / factor - 0.5  # source offset of this phase, in (-0.5, 0.5)
        if shift == 0 or n == 1:
            phases.append(x)
            continue
        y = torch.empty_like(x)
        if shift < 0:  # between each element and the previous one; the first is repeated
            torch.lerp(
                x.narrow(dim, 1, n - 1),
                x.narrow(dim, 0, n - 1),
                -shift,
                out=y.narrow(dim, 1, n - 1),
            )
            y.narrow(dim, 0, 1).copy_(x.narrow(dim, 0, 1))
        else:  # between each element and the next one; the last is repeated
            torch.lerp(
                x.narrow(dim, 0, n - 1), x.narrow(dim, 1, n - 1), shift, out=y.narrow(dim, 0, n - 1)
            )
            y.narrow(dim, n - 1, 1).copy_(x.narrow(dim, n - 1, 1))
        phases.append(y)
    return phases


def subpixel_stability(
    logits: torch.Tensor,
    valid: tuple[int, int],
    threshold: float,
    offset: float,
    factor: int = SUBPIXELS,
) -> torch.Tensor:
    """Stability scores of masks measured on their ``factor``x bilinear upsample.

    Same definition as :func:`grounded_sam.utils.masks.stability_score` (0 for a mask that
    is empty even at ``threshold - offset``), counted over sub-pixels without building the
    upsampled tensor.

    Args:
        logits: (N, h, w) low-res logits (include one row/column beyond the valid area where
            there is one, so that interpolation near its edge sees the same neighbours as a
            full upsample).
        valid: (rows, cols) of the upsampled frame that belong to the image.
        threshold: Mask threshold on the logits.
        offset: Stability score offset.
        factor: Sub-pixels per low-res pixel side (1 = count the low-res pixels).

    Returns:
        (N,) float32 stability scores.
    """
    n, h, w = logits.shape
    vh, vw = valid
    strict = torch.zeros(n, dtype=torch.int32, device=logits.device)
    loose = torch.zeros(n, dtype=torch.int32, device=logits.device)
    for a, row_phase in enumerate(upsample_phases(logits, factor, 1)):
        rows = min(h, -(-(vh - a) // factor))  # sub-pixel rows factor * i + a < vh
        if rows <= 0:
            continue
        for b, phase in enumerate(upsample_phases(row_phase[:, :rows], factor, 2)):
            cols = min(w, -(-(vw - b) // factor))
            if cols <= 0:
                continue
            v = phase[:, :, :cols]
            strict += (v > threshold + offset).sum((1, 2), dtype=torch.int32)
            loose += (v > threshold - offset).sum((1, 2), dtype=torch.int32)
    ratio = strict / loose.clamp_min(1)
    return torch.where(loose > 0, ratio, torch.zeros_like(ratio)).float()
