"""Mask decoder micro-benchmark: B point prompts on one image embedding, ours vs transformers.

Both sides run the same full-size SAM mask decoder weights (hidden 256, 8 heads, 64x64
embedding; seeded random weights of realistic magnitude, see ``bench_speed.realistic_init_``)
on the same prompts:

* **transformers**: ``SamMaskDecoder`` called the way ``SamModel`` calls it for B prompts on
  one image (the embedding and positional encoding repeated per prompt);
* **ours**: :class:`grounded_sam.sam.fast_decoder.FastMaskDecoder`, including the once-per-image
  shared work (``prepare``), i.e. what one batch costs when it is the only batch on an image.

The two are interleaved round by round (one warm-up, then ``--repeats`` timed rounds), per
dtype; the table reports medians (min-max) and the ratio, and the max |delta logit| between
the two sides of the timed run.

Example::

    python benchmarks/bench_decoder.py --prompts 64 --repeats 3 --out benchmarks/results/decoder_cpu
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import fmt_seconds, machine_info, summarize  # noqa: E402


def build(dtype: torch.dtype, seed: int = 0):
    """Full-size prompt encoder + mask decoder with realistic random weights."""
    from transformers import SamConfig
    from transformers.models.sam.modeling_sam import SamMaskDecoder, SamPromptEncoder

    from benchmarks.bench_speed import realistic_init_

    config = SamConfig()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        parts = torch.nn.Module()
        parts.prompt_encoder = SamPromptEncoder(config)
        parts.mask_decoder = SamMaskDecoder(config.mask_decoder_config)
    parts.eval()
    realistic_init_(parts, seed)
    return parts.to(dtype), config


def _measure(name: str, prompts: int, repeats: int) -> dict[str, Any]:
    """One dtype: interleaved timed rounds of both decoders."""
    from grounded_sam.sam.fast_decoder import FastMaskDecoder

    dtype = getattr(torch, name)
    parts, config = build(dtype)
    side = config.prompt_encoder_config.image_embedding_size
    gen = torch.Generator().manual_seed(1)
    emb = torch.randn(1, 256, side, side, generator=gen).to(dtype)
    grid = torch.ones(side, side)
    xy = torch.stack([grid.cumsum(1) - 0.5, grid.cumsum(0) - 0.5], dim=-1) / side
    with torch.inference_mode():
        pe = parts.prompt_encoder.shared_embedding(xy.to(dtype)).permute(2, 0, 1)[None]
        pts = (torch.rand(prompts, 1, 1, 2, generator=gen) * 1024).to(dtype)
        labels = torch.ones(prompts, 1, 1, dtype=torch.long)
        sparse, dense = parts.prompt_encoder(pts, labels, None, None)
    fast = FastMaskDecoder(parts.mask_decoder)
    dec = parts.mask_decoder

    def ref():
        return dec(
            image_embeddings=emb.repeat(prompts, 1, 1, 1),
            image_positional_embeddings=pe.repeat(prompts, 1, 1, 1),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=True,
        )[0][:, 0]

    def ours():
        shared = fast.prepare(emb, pe, dense[:1])
        return fast(emb, pe, sparse[:, 0], dense[:1], True, shared=shared)[0]

    times: dict[str, list[float]] = {"ref": [], "ours": []}
    diff = 0.0
    with torch.inference_mode():
        ref(), ours()  # warm-up
        for r in range(repeats):
            outs = {}
            for side_name in (("ours", "ref") if r % 2 == 0 else ("ref", "ours")):
                t0 = time.perf_counter()
                outs[side_name] = (ours if side_name == "ours" else ref)()
                times[side_name].append(time.perf_counter() - t0)
            diff = max(diff, float((outs["ours"].float() - outs["ref"].float()).abs().max()))
    return {
        "ref": summarize(times["ref"]),
        "ours": summarize(times["ours"]),
        "ratio": summarize(times["ref"])["median"] / summarize(times["ours"])["median"],
        "max_abs_logit_diff": diff,
        "raw": times,
    }


def run(prompts: int, repeats: int, dtypes: list[str]) -> dict[str, Any]:
    """Every dtype in turn."""
    return {name: _measure(name, prompts, repeats) for name in dtypes}


def table(rows: dict[str, Any], prompts: int) -> str:
    lines = [
        f"| mask decoder, {prompts} point prompts, one embedding | ours: median (min–max) | "
        "transformers: median (min–max) | transformers / ours | max abs delta logit |",
        "|---|---|---|---:|---:|",
    ]
    for name, row in rows.items():
        o, r = row["ours"], row["ref"]
        lines.append(
            f"| {name} | {fmt_seconds(o['median'])} ({fmt_seconds(o['min'])}–"
            f"{fmt_seconds(o['max'])}) | {fmt_seconds(r['median'])} ({fmt_seconds(r['min'])}–"
            f"{fmt_seconds(r['max'])}) | {row['ratio']:.1f}× | {row['max_abs_logit_diff']:.2g} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--prompts", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    p.add_argument("--out", default="benchmarks/results/decoder_cpu")
    args = p.parse_args(argv)
    info = machine_info("cpu")
    rows = run(args.prompts, args.repeats, args.dtypes)
    info["loadavg_1m_end"] = round(os.getloadavg()[0], 2)
    md = table(rows, args.prompts)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(
        json.dumps({"machine": info, "prompts": args.prompts, "rows": rows,
                    "command": " ".join([Path(sys.executable).name, *sys.argv])}, indent=2)
    )
    out.with_suffix(".md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
