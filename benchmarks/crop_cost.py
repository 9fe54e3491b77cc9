"""CLIP crop-stage cost vs image size: adaptive ``roi_align`` on the full image (old) vs the
box-filtered pyramid (new), side by side in one run.

Usage::

    python -m benchmarks.crop_cost [--regions 100] [--repeats 3]

For each image size, ``--regions`` SAM-like boxes (a mix of whole-image, half-image and small
boxes, as the grid proposals of one image) are cropped to 224x224 "masked" crops with a
low-res mask frame, as :meth:`ClipScorer.encode_regions` does for ViT-B-32. "old" forces
pyramid level 0 (the former method); the old method is timed on ``--old-regions`` boxes only
on large images (it takes minutes) and scaled to ``--regions``. Prints one line per size:
median seconds old, new, and the ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch

from grounded_sam.clip.regions import RegionCropper, mean_fill_color


def boxes_for(h: int, w: int, n: int, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    frac = rng.choice([1.0, 0.5, 0.25, 0.05], size=n, p=[0.1, 0.3, 0.3, 0.3])
    bw, bh = np.maximum(frac * w, 2), np.maximum(frac * h * rng.uniform(0.5, 1, n), 2)
    x0 = rng.uniform(0, w - bw + 1e-3)
    y0 = rng.uniform(0, h - bh + 1e-3)
    return torch.tensor(np.stack([x0, y0, x0 + bw, y0 + bh], 1), dtype=torch.float32)


def run(h: int, w: int, n: int, old: bool, repeats: int) -> float:
    cropper = RegionCropper((224, 224), mean_fill_color())
    if old:
        cropper.top_level = lambda size: 0  # type: ignore[method-assign]
    image = torch.from_numpy(np.random.default_rng(1).integers(0, 255, (3, h, w), dtype=np.uint8))
    boxes = boxes_for(h, w, n)
    scale = 256 / max(h, w)
    masks = torch.rand(n, max(1, round(h * scale)), max(1, round(w * scale))) > 0.5
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        source = cropper.prepare_image(image)
        regions = cropper.regions(boxes)
        for start in range(0, n, 64):
            cropper.crop(source, (h, w), regions[start : start + 64], masks[start : start + 64])
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--regions", type=int, default=100)
    parser.add_argument("--old-regions", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    print(f"load average: {os.getloadavg()}")
    print(f"{'image':>12} {'old s':>9} {'new s':>8} {'old/new':>8}  (crops of {args.regions})")
    for h, w in [(480, 640), (3000, 4000), (200, 10000)]:
        new = run(h, w, args.regions, old=False, repeats=args.repeats)
        m = args.regions if h * w < 1e6 else args.old_regions
        old = run(h, w, m, old=True, repeats=1 if m < args.regions else args.repeats)
        old *= args.regions / m
        note = "" if m == args.regions else f"  (old timed on {m} boxes, scaled)"
        print(f"{w:>5}x{h:<6} {old:9.2f} {new:8.2f} {old / new:8.1f}{note}")


if __name__ == "__main__":
    main()


def index_times(sizes: list[tuple[int, int]], old: bool) -> list[float]:
    """Seconds of ``GroundedSAM.index`` with tiny random models (CPU) per (H, W) size."""
    import tempfile

    from grounded_sam import EverythingSettings, GroundedSAM
    from grounded_sam.testing import save_tiny_models

    with tempfile.TemporaryDirectory() as tmp:
        sam, clip = save_tiny_models(tmp)
        gs = GroundedSAM.from_pretrained(
            sam=sam,
            clip=clip,
            device="cpu",
            proposal_settings=EverythingSettings(
                points_per_side=16, pred_iou_thresh=0.0, stability_score_thresh=0.0
            ),
        )
    saved = RegionCropper.top_level
    if old:
        RegionCropper.top_level = lambda self, size: 0  # type: ignore[method-assign]
    try:
        out = []
        for h, w in sizes:
            image = np.random.default_rng(2).integers(0, 255, (h, w, 3), dtype=np.uint8)
            t0 = time.perf_counter()
            index = gs.index(image)
            out.append(time.perf_counter() - t0)
            print(f"  {'old' if old else 'new'} {w}x{h}: {out[-1]:.2f} s, {len(index)} regions")
        return out
    finally:
        RegionCropper.top_level = saved  # type: ignore[method-assign]
