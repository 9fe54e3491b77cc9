"""Throughput of ``label`` on one process vs ``label --ray`` with 1 and 2 local actors.

All three runs label the same images with the same models and settings, side by side in one
invocation, and the script checks that the three COCO files are identical (timestamps
aside). Reported per run: wall time of the whole job (Ray start-up, model loading, export
included) and images per minute over the labeling stage after the first result (what a
long job converges to; measured between the first and the last result file written: the
per-image state files of ``label``, the shards of ``--ray``). The machine, the load average
before and after, and the settings are printed and saved.

    python benchmarks/bench_ray.py --images 48 --out benchmarks/results/ray_tiny.json
    python benchmarks/bench_ray.py --models full --images 4 --out benchmarks/results/ray_full.json

``--models tiny``: the tiny random test models (grounded_sam.testing) on 96x128 synthetic
images. ``--models full``: SAM ViT-B and CLIP ViT-B-32 at full size with random weights
(benchmarks/bench_speed.py's), 16x16 grid, on the same synthetic scenes at 480x640.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import REPO, machine_info  # noqa: E402

CLASSES = "date, fig, hazelnut"


def comparable(path: Path) -> dict:
    doc = json.loads(path.read_text())
    for image in doc["images"]:
        image.pop("date_captured")
    return {k: doc[k] for k in ("images", "annotations", "categories", "info")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--models", choices=("tiny", "full"), default="tiny")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    # Full-size models and images take about 1 GB: always removed, as the other benchmarks do.
    with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
        return run(args, Path(tmp))


def run(args: argparse.Namespace, work: Path) -> int:
    """Label ``args.images`` synthetic images in ``work`` one way and the Ray ways; report."""
    import ray
    import torch

    from grounded_sam import EverythingSettings, GroundedSAM
    from grounded_sam.distributed import label_dataset
    from grounded_sam.distributed.shards import list_shards
    from grounded_sam.labeling import STATE_DIRNAME, label_folder
    from tests.cli.conftest import synthetic_image

    torch.set_num_threads(1)  # one CPU per process, as each Ray actor gets
    h, w = (96, 128) if args.models == "tiny" else (480, 640)
    for i in range(args.images):
        synthetic_image(work / "images" / f"img{i:04d}.jpg", h=h, w=w, seed=i)
    if args.models == "tiny":
        from grounded_sam.testing import save_tiny_models

        sam, clip = save_tiny_models(work / "models")
        settings = EverythingSettings(points_per_side=4, pred_iou_thresh=0.0,
                                      stability_score_thresh=0.5)  # fmt: skip
    else:
        from benchmarks.bench_speed import save_random_clip, save_random_sam

        sam = str(save_random_sam(work / "models" / "sam", "vit_b"))
        clip = save_random_clip(work / "models" / "clip", "ViT-B-32")
        settings = EverythingSettings(points_per_side=16, pred_iou_thresh=0.0,
                                      stability_score_thresh=0.5, box_nms_thresh=1.0)  # fmt: skip
    kwargs = {"sam": sam, "clip": clip, "device": "cpu", "proposal_settings": settings,
              "threshold": 0.0}  # fmt: skip
    info = machine_info("cpu")
    info["loadavg_before"] = os.getloadavg()
    runs = []

    t0 = time.perf_counter()
    gs = GroundedSAM.from_pretrained(**kwargs)
    load = time.perf_counter() - t0
    label_folder(gs, work / "images", CLASSES, work / "single", progress=False)
    t2 = time.perf_counter()
    # Steady rate from the per-image state files, as for the shards below.
    states = work / "single" / STATE_DIRNAME / "images"
    times = sorted(p.stat().st_mtime for p in states.rglob("*.json"))
    runs.append({"run": "label (one process, 1 thread)", "wall_s": t2 - t0,
                 "images_per_min_labeling": 60 * (len(times) - 1) / (times[-1] - times[0]),
                 "startup_s": load})  # fmt: skip
    del gs

    # Logical CPUs: the actors plus one for reading files (oversubscribes a 2-core machine).
    ray.init(num_cpus=max(args.workers) + 1, include_dashboard=False, log_to_driver=False,
             logging_level="WARNING")  # fmt: skip
    reference = comparable(work / "single" / "annotations.json")
    try:
        for n in args.workers:
            out = work / f"ray{n}"
            report = label_dataset(
                work / "images", CLASSES, out, concurrency=n, batch_size=args.batch_size,
                progress=False, **kwargs,
            )  # fmt: skip
            # Steady rate from the workers' own clock: shards are written batch by batch.
            times = sorted(p.stat().st_mtime for p in list_shards(out / STATE_DIRNAME / "shards"))
            steady = times[-1] - times[0]
            after_first = args.images - args.batch_size  # images after the first shard
            runs.append({
                "run": f"label --ray, {n} actor(s)",
                "wall_s": report.seconds,
                "images_per_min_labeling": 60 * after_first / steady if steady > 0 else None,
                "startup_s": report.startup_seconds,
                "same_dataset": comparable(out / "annotations.json") == reference,
            })  # fmt: skip
    finally:
        ray.shutdown()
    info["loadavg_after"] = os.getloadavg()
    result = {"machine": info, "models": args.models, "images": args.images,
              "image_size": [h, w], "batch_size": args.batch_size, "runs": runs}  # fmt: skip
    before, after = (
        ", ".join(f"{v:.1f}" for v in info[k]) for k in ("loadavg_before", "loadavg_after")
    )
    print(f"{args.images} images {w}x{h}, {args.models} models, batch size {args.batch_size}; "
          f"load average before {before}, after {after}")  # fmt: skip
    print("| run | wall time (s) | start-up to first result (s) | images/min after it | "
          "same dataset |\n|---|---:|---:|---:|---|")  # fmt: skip
    for r in runs:
        ipm = r["images_per_min_labeling"]
        print(f"| {r['run']} | {r['wall_s']:.1f} | {r['startup_s']:.1f} | "
              f"{ipm:.3g} | {r.get('same_dataset', 'reference')} |")  # fmt: skip
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1, default=str) + "\n")
    return 0 if all(r.get("same_dataset", True) for r in runs) else 1


if __name__ == "__main__":
    os.chdir(REPO)
    sys.exit(main())
