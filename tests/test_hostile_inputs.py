"""Hostile inputs, round 3 (issue 23): hangs, leaks, silent overwrites and unbounded work.

Each test names the attack it replays. Where memory or work is the point, the bound is
checked by counting (samples taken, bytes allocated) or under a memory cap in a subprocess,
never by wall time.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- CLIP regions
def _count_roi_samples(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Wrap ``torchvision.ops.roi_align`` to count the bilinear samples it takes.

    With ``sampling_ratio=-1`` (adaptive) every output pixel of a roi averages
    ``ceil(roi_h / out_h) * ceil(roi_w / out_w)`` samples.
    """
    import torchvision.ops

    real = torchvision.ops.roi_align
    counted = [0]

    def counting(inp, rois, output_size, spatial_scale=1.0, sampling_ratio=-1, aligned=False):
        out_h, out_w = output_size
        r = rois.detach().double() * spatial_scale
        rh = (r[:, 4] - r[:, 2]).clamp_min(0)
        rw = (r[:, 3] - r[:, 1]).clamp_min(0)
        per_pixel = torch.ceil(rh / out_h).clamp_min(1) * torch.ceil(rw / out_w).clamp_min(1)
        counted[0] += int(per_pixel.sum()) * out_h * out_w
        return real(inp, rois, output_size, spatial_scale, sampling_ratio, aligned)

    monkeypatch.setattr(torchvision.ops, "roi_align", counting)
    return counted


@pytest.mark.parametrize(
    ("height", "width", "frame"),
    [(64, 64, (256, 256)), (1, 1, (256, 256)), (1, 20000, (1, 256)), (20000, 1, (256, 1))],
)
def test_degenerate_images_score_within_a_work_bound(
    tiny_model_specs, monkeypatch, height: int, width: int, frame: tuple[int, int]
) -> None:
    # 1x1 and 1x20000 images took 21-47 s in CLIP scoring (64x64: 0.02 s): the regions of
    # such images span thousands of mask-frame pixels per output pixel (a 1x20000 image's
    # square regions cover 24000 rows of its one-row frame), and adaptive roi_align took a
    # sample for each. The mask frame is now sampled from a pyramid level, as the image is.
    from grounded_sam.clip import load_clip
    from grounded_sam.clip.regions import MAX_MASK_SAMPLES_PER_AXIS, MAX_SAMPLES_PER_AXIS

    scorer = load_clip(tiny_model_specs[1], device="cpu")
    out_h, out_w = scorer.image_size
    n = 12
    image = torch.randint(0, 256, (3, height, width), dtype=torch.uint8)
    boxes = torch.tensor([[0.0, 0.0, width, height]] * n)
    boxes[1::2, 2] = max(1.0, width / 3)  # some partial boxes too
    masks = torch.ones((n, *frame), dtype=torch.bool)
    counted = _count_roi_samples(monkeypatch)
    emb = scorer.encode_regions(image, boxes, masks)
    assert emb.shape == (n, scorer.embed_dim) and torch.isfinite(emb).all()
    levels = 2 * math.ceil(math.log2(max(height, width) * 2 + 16))  # one-sample dummy rois
    per_region = MAX_MASK_SAMPLES_PER_AXIS**2 + MAX_SAMPLES_PER_AXIS**2 + levels
    assert counted[0] <= n * out_h * out_w * per_region, counted[0] / (n * out_h * out_w)
