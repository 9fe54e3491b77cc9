"""Shared pieces of the parity tests (fast decoder; HQ-SAM and SAM 2 against their references).

Tolerance and why: both sides compute the same function in float32; the fast decoder sums in
a different order, which moves each layer's result by float32 rounding. Logits and IoUs pass
when ``|ours - ref| <= 1e-3 + 1e-4 * |ref|``; a real error (wrong head split, missing bias,
swapped upscaling taps) moves logits by O(0.1-10). Thresholded masks must agree to
IoU >= 0.999: only pixels whose logit lies within rounding of 0 may flip.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch

LOGIT_TOL = (1e-3, 1e-4)
IOU_MIN = 0.999
KINDS = ("point", "multi-point", "box", "point+box", "box+mask", "mask")
MEASURED: dict[str, float] = defaultdict(float)
"""Largest differences seen per tag (printed with ``GS_SAM_PARITY_REPORT=1 pytest -s``)."""


def make_prompts(parts, kind: str, batch: int, seed: int):
    """Prompt encoder output for ``batch`` prompts of one kind: (sparse (B, 1, T, C) or None,
    dense (B, C, E, E)).

    ``parts`` has ``prompt_encoder``, ``image_size`` (input frame side) and ``side`` (E).
    """
    gen = torch.Generator().manual_seed(seed)
    s = parts.image_size
    points = labels = boxes = masks = None
    if kind in ("point", "point+box"):
        points = torch.rand(batch, 1, 1, 2, generator=gen) * s
        labels = torch.ones(batch, 1, 1, dtype=torch.long)
    if kind == "multi-point":
        points = torch.rand(batch, 1, 3, 2, generator=gen) * s
        labels = torch.tensor([1, 0, 1]).expand(batch, 1, 3)
    if kind in ("box", "point+box", "box+mask"):
        xy = torch.rand(batch, 2, 2, generator=gen) * s
        boxes = torch.cat([xy.min(1).values, xy.max(1).values], dim=-1)[:, None]
    if kind in ("box+mask", "mask"):
        side = 4 * parts.side
        masks = torch.randn(batch, 1, side, side, generator=gen) * 4
    with torch.no_grad():
        sparse, dense = parts.prompt_encoder(
            input_points=points, input_labels=labels, input_boxes=boxes, input_masks=masks
        )
    return sparse, dense


def assert_parity(masks, iou, ref_masks, ref_iou, tag: str) -> None:
    """Fast decoder output (masks (B, M, L, L), iou (B, M)) matches the reference's.

    The reference must have produced real, distinct masks: every mask neither empty nor full,
    and the first two prompts' masks different.
    """
    # the reference produced real, distinct masks
    ref_bin = ref_masks > 0
    frac = ref_bin.float().mean((-2, -1))
    assert ((frac > 0.001) & (frac < 0.999)).all(), f"{tag}: reference masks empty or full"
    assert (ref_masks[0] - ref_masks[1]).abs().max() > 0.1, f"{tag}: prompts gave equal masks"
    assert masks.shape == ref_masks.shape and iou.shape == ref_iou.shape
    atol, rtol = LOGIT_TOL
    for what, a, b in (("logits", masks, ref_masks), ("iou", iou, ref_iou)):
        diff = (a - b).abs()
        key = f"{tag} max |d {what}|"
        MEASURED[key] = max(MEASURED[key], diff.max().item())
        assert (diff <= atol + rtol * b.abs()).all(), f"{tag} {what}: max |d| {diff.max():.3g}"
    ours_bin = masks > 0
    inter = (ours_bin & ref_bin).flatten(1).sum(1).float()
    union = (ours_bin | ref_bin).flatten(1).sum(1).float()
    worst = torch.where(union > 0, inter / union.clamp_min(1), 1.0).min().item()
    MEASURED[f"{tag} 1 - min mask IoU"] = max(MEASURED[f"{tag} 1 - min mask IoU"], 1 - worst)
    assert worst >= IOU_MIN, f"{tag}: mask IoU {worst:.5f}"


def assert_close(ours, ref, what: str) -> None:
    """Arrays agree to ``|ours - ref| <= 1e-3 + 1e-4 * |ref|`` elementwise (same shape)."""
    ours, ref = np.asarray(ours, np.float32), np.asarray(ref, np.float32)
    assert ours.shape == ref.shape, f"{what}: {ours.shape} vs {ref.shape}"
    atol, rtol = LOGIT_TOL
    excess = np.abs(ours - ref) - (atol + rtol * np.abs(ref))
    assert excess.max() <= 0, f"{what}: max |diff| {np.abs(ours - ref).max():.3g}"
