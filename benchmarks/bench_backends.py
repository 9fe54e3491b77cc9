"""Speed of the SAM back-ends, side by side: SAM ViT-B, HQ-SAM ViT-B, SAM 2.1 t / s / b+ / l.

Full-size architectures with seeded random weights (``bench_speed.realistic_init_``: cost does
not depend on the values, but denormal activations would), CPU, float32, one process, models
interleaved round by round so that machine noise hits all alike (each model is built afresh
every round, so that only one is in memory at a time; building is not timed). Per image and
model:

* ``encoder``: ``predictor.encode(image)`` (resize + image encoder);
* ``index``: ``GroundedSAM.index(image)`` (encoder + 16x16 grid proposals + CLIP ViT-B-32
  region scoring of up to 100 proposals, random CLIP weights).
* ``--flops``: floating-point operations (``torch.utils.flop_counter``; a multiply-add counts
  2) of the encoder and of one batch of 64 point prompts through our decoder, counted once
  per model outside the timed rounds. They do not depend on the machine, so they are the
  figure to go by where no GPU was available to time on (GPU time tracks FLOPs for these
  dense models far better than CPU time does).

Medians over rounds; ``uptime`` load and CPU flags are recorded (the machine may be shared).

Example::

    python benchmarks/bench_backends.py --rounds 2 --out benchmarks/results/backends_cpu
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_speed import realistic_init_, save_random_clip  # noqa: E402
from benchmarks.common import SHARED_DATA, machine_info, summarize  # noqa: E402

logger = logging.getLogger("benchmarks.bench_backends")

# Meta's SAM 2.1 Hiera configs (sam2/configs/sam2.1/*.yaml) in transformers' terms.
HIERA = {
    "sam2.1_t": {"embed": 96, "heads": 1, "stages": [1, 2, 7, 2], "glob": [5, 7, 9],
                 "bkg": [7, 7], "win": [8, 4, 14, 7]},
    "sam2.1_s": {"embed": 96, "heads": 1, "stages": [1, 2, 11, 2], "glob": [7, 10, 13],
                 "bkg": [7, 7], "win": [8, 4, 14, 7]},
    "sam2.1_b+": {"embed": 112, "heads": 2, "stages": [2, 3, 16, 3], "glob": [12, 16, 20],
                  "bkg": [14, 14], "win": [8, 4, 14, 7]},
    "sam2.1_l": {"embed": 144, "heads": 2, "stages": [2, 6, 36, 4], "glob": [23, 33, 43],
                 "bkg": [7, 7], "win": [8, 4, 16, 8]},
}  # fmt: skip

MODELS = ["sam_vit_b", "hq_vit_b", "sam2.1_t", "sam2.1_s", "sam2.1_b+", "sam2.1_l"]


def sam2_vision_config(name: str) -> dict[str, Any]:
    """The ``vision_config`` of a released SAM 2.1 size (``"sam2.1_t"`` ... ``"sam2.1_l"``)."""
    h = HIERA[name]
    widths = [h["embed"] * 2**i for i in range(4)]
    backbone = {
        "model_type": "sam2_hiera_det_model",
        "hidden_size": h["embed"],
        "num_attention_heads": h["heads"],
        "blocks_per_stage": h["stages"],
        "embed_dim_per_stage": widths,
        "num_attention_heads_per_stage": [h["heads"] * 2**i for i in range(4)],
        "window_size_per_stage": h["win"],
        "global_attention_blocks": h["glob"],
        "window_positional_embedding_background_size": h["bkg"],
    }
    return {
        "model_type": "sam2_vision_model",
        "backbone_config": backbone,
        "backbone_channel_list": widths[::-1],
    }


def build_model(name: str, seed: int = 0) -> torch.nn.Module:
    """A full-size model of the named family/size with realistic random weights."""
    import transformers as tf

    torch.manual_seed(seed)
    if name == "sam_vit_b":
        model = tf.SamModel(tf.SamConfig())
    elif name == "hq_vit_b":
        model = tf.SamHQModel(tf.SamHQConfig())
    else:
        model = tf.Sam2Model(tf.Sam2Config(vision_config=sam2_vision_config(name)))
    realistic_init_(model, seed)
    return model.eval()


def _images(n: int) -> list[np.ndarray]:
    from grounded_sam.inputs import load_image

    photos = sorted((SHARED_DATA / "coco-val-mini" / "images").glob("*.jpg"))[:n]
    if photos:
        return [load_image(p) for p in photos]
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (480, 640, 3), dtype=np.uint8) for _ in range(n)]


def count_flops(predictor, image: np.ndarray, prompts: int = 64) -> dict[str, float]:
    """GFLOPs of ``predictor.encode(image)`` and of one batch of point prompts (decode)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode():
        with FlopCounterMode(display=False) as counter:
            embedding = predictor.encode(image)
        encoder = counter.get_total_flops()
        h, w = image.shape[:2]
        gen = torch.Generator().manual_seed(0)
        points = torch.rand(prompts, 1, 2, generator=gen) * torch.tensor([w, h])
        labels = torch.ones(prompts, 1, dtype=torch.long)
        with FlopCounterMode(display=False) as counter:
            predictor.decode(embedding, points=points, labels=labels)
        decode = counter.get_total_flops()
    return {"encoder_gflop": encoder / 1e9, f"decode{prompts}_gflop": decode / 1e9}


def run(
    models: list[str],
    n_images: int,
    rounds: int,
    threads: int | None,
    warmup: bool = True,
    encoder_only: bool = False,
    flops: bool = False,
) -> dict[str, Any]:
    """Time every model, interleaved; returns raw times and medians."""
    from grounded_sam.clip import load_clip
    from grounded_sam.pipeline import DEFAULT_INDEX_SETTINGS, GroundedSAM
    from grounded_sam.sam.factory import create_predictor

    if threads:
        torch.set_num_threads(threads)
    images = _images(n_images)
    clip = None
    if not encoder_only:
        with tempfile.TemporaryDirectory() as tmp:
            clip = load_clip(save_random_clip(Path(tmp) / "clip", "ViT-B-32"), device="cpu")
    params: dict[str, int] = {}
    gflops: dict[str, dict[str, float]] = {}
    times: dict[str, dict[str, list[float]]] = {m: {"encoder": [], "index": []} for m in models}
    counts: dict[str, list[int]] = {m: [] for m in models}
    for r in range(0 if warmup else 1, rounds + 1):  # round 0 warms up and is not counted
        for name in models:
            # one model in memory at a time (the large ones take GBs); building is not timed
            t0 = time.perf_counter()
            model = build_model(name)
            params[name] = sum(p.numel() for p in model.parameters())
            predictor = create_predictor(model)
            logger.info("built %s (%.0fM params) in %.1fs", name, params[name] / 1e6,
                        time.perf_counter() - t0)  # fmt: skip
            if flops and name not in gflops:  # counted once, outside the timed rounds
                gflops[name] = count_flops(predictor, images[0])
                logger.info("%s: %s", name, gflops[name])
            for image in images:
                with torch.inference_mode():
                    t0 = time.perf_counter()
                    predictor.encode(image)
                    t1 = time.perf_counter()
                t2 = t1
                if clip is not None:
                    gs = GroundedSAM(predictor, clip, proposal_settings=DEFAULT_INDEX_SETTINGS)
                    index = gs.index(image)
                    t2 = time.perf_counter()
                if r:
                    times[name]["encoder"].append(t1 - t0)
                    if clip is not None:
                        times[name]["index"].append(t2 - t1)
                        counts[name].append(len(index))
                logger.info("round %d %s: encoder %.2fs index %.2fs", r, name, t1 - t0, t2 - t1)
            del model, predictor
            gc.collect()
    return {
        "params": params,
        "gflops": gflops,
        "times": times,
        "proposals": counts,
        "median": {
            m: {k: summarize(v)["median"] for k, v in t.items() if v} for m, t in times.items()
        },
    }


def table(result: dict[str, Any]) -> str:
    ref = result["median"].get("sam_vit_b")
    gflops = result.get("gflops") or {}
    lines = [
        "| model | params | encoder (s) | index (s) | encoder vs SAM ViT-B | index vs SAM ViT-B |",
        "|---|---|---|---|---|---|",
    ]
    if gflops:
        lines[0] += " encoder GFLOP | decode 64 prompts GFLOP |"
        lines[1] += "---|---|"
    for name, med in result["median"].items():
        index = med.get("index")
        rel_e = f"{med['encoder'] / ref['encoder']:.2f}x" if ref else "-"
        rel_i = f"{index / ref['index']:.2f}x" if ref and index and ref.get("index") else "-"
        shown = f"{index:.2f}" if index else "-"
        row = (
            f"| {name} | {result['params'][name] / 1e6:.0f}M | {med['encoder']:.2f} | "
            f"{shown} | {rel_e} | {rel_i} |"
        )
        if gflops:
            g = gflops.get(name, {})
            row += f" {g.get('encoder_gflop', float('nan')):.0f} |"
            row += f" {g.get('decode64_gflop', float('nan')):.0f} |"
        lines.append(row)
    return "\n".join(lines)


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=MODELS, choices=MODELS)
    parser.add_argument("--images", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-warmup", action="store_true", help="count the first round too")
    parser.add_argument("--encoder-only", action="store_true", help="skip the index timing")
    parser.add_argument("--flops", action="store_true", help="also count encoder/decoder FLOPs")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    uptime_before = _uptime()
    result = run(
        args.models,
        args.images,
        args.rounds,
        args.threads,
        warmup=not args.no_warmup,
        encoder_only=args.encoder_only,
        flops=args.flops,
    )
    result["uptime_before"] = uptime_before
    result["uptime_after"] = _uptime()
    result["machine"] = machine_info("cpu")
    result["torch_threads"] = torch.get_num_threads()
    text = table(result)
    print(text)
    print("uptime before:", uptime_before)
    print("uptime after: ", result["uptime_after"])
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "result.json").write_text(json.dumps(result, indent=2, default=str))
        (args.out / "table.md").write_text(text + "\n")
    return result


if __name__ == "__main__":
    main()
