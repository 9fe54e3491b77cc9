"""segment_many (background decoding) vs a plain loop of load_image + segment, side by side.

Run: ``python benchmarks/bench_many.py [--sam S --clip C] [--rounds 3]`` (tiny random models by
default). Prints per-round times, the median ratio, the load average and the CPU flags.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import torch

from grounded_sam import EverythingSettings, GroundedSAM, load_image
from grounded_sam.testing import save_tiny_models

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sam")
    parser.add_argument("--clip")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--points-per-side", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        sam, clip = (args.sam, args.clip) if args.sam else save_tiny_models(tmp)
        run(sam, clip, args)


def run(sam: str, clip: str, args: argparse.Namespace) -> None:
    gs = GroundedSAM.from_pretrained(
        sam=sam, clip=clip, device="cpu", threshold=0.0,
        proposal_settings=EverythingSettings(points_per_side=args.points_per_side,
                                             pred_iou_thresh=0.0, stability_score_thresh=0.5),
    )  # fmt: skip
    images = sorted((DATA / "coco-val-crowded" / "images").glob("*.jpg"))
    images += sorted((DATA / "coco-val-mini" / "images").glob("*.jpg"))
    if not images:
        raise SystemExit(f"no images under {DATA}")
    print(f"{len(images)} images, sam={sam}, clip={clip}")
    loop_t, many_t = [], []
    for r in range(args.rounds):
        t0 = time.perf_counter()
        n_loop = sum(len(gs.segment(load_image(p), "person, dog")) for p in images)
        loop_t.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        n_many = sum(len(d) for _, d in gs.segment_many(images, "person, dog", show_progress=False))
        many_t.append(time.perf_counter() - t0)
        assert n_loop == n_many, (n_loop, n_many)
        print(f"round {r}: loop {loop_t[-1]:.2f}s  segment_many {many_t[-1]:.2f}s  ({n_many} dets)")
    ratios = [a / b for a, b in zip(loop_t, many_t, strict=True)]
    print(f"median loop/segment_many = {statistics.median(ratios):.3f}  (ratios {ratios})")
    print("load average:", os.getloadavg())
    flags = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    print(next((ln for ln in flags.splitlines() if ln.startswith("Flags")), "")[:200], "...")


if __name__ == "__main__":
    main()
