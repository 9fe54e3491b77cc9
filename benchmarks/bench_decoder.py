"""Mask decoder micro-benchmark: B point prompts on one image embedding, ours vs the reference.

``--families`` picks SAM (default), HQ-SAM and / or SAM 2. Both sides run the same full-size
mask decoder weights (hidden 256, 8 heads, 64x64
embedding; seeded random weights of realistic magnitude, see ``bench_speed.realistic_init_``)
on the same prompts:

* **reference**: ``SamMaskDecoder`` / ``Sam2MaskDecoder`` called the way ``SamModel`` /
  ``Sam2Model`` call them for B prompts on one image (the embedding, positional encoding and
  SAM 2's high-resolution features repeated per prompt); for HQ-SAM
  :func:`grounded_sam.sam.hq.hq_mask_decoder` (SysCV's data flow on the same modules, the
  straightforward batched form);
* **ours**: :class:`grounded_sam.sam.fast_decoder.FastMaskDecoder`, including the once-per-image
  shared work (``prepare``, ``prepare_features``), i.e. what one batch costs when it is the
  only batch on an image.

The two are interleaved round by round (one warm-up, then ``--repeats`` timed rounds), per
dtype; the table reports medians (min-max) and the ratio, and the max |delta logit| between
the two sides of the timed run.

Example::

    python benchmarks/bench_decoder.py --prompts 64 --repeats 3 --out benchmarks/results/decoder_cpu
    python benchmarks/bench_decoder.py --families sam sam_hq sam2 --dtypes float32 \\
        --out benchmarks/results/decoder_families_cpu
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

FAMILIES = ("sam", "sam_hq", "sam2")


def build(dtype: torch.dtype, seed: int = 0, family: str = "sam"):
    """Full-size prompt encoder + mask decoder of a family with realistic random weights.

    Returns:
        ``(parts, side)``: a module with ``prompt_encoder`` and ``mask_decoder``, and the
        embedding side E (64).
    """
    import transformers as tf

    from benchmarks.bench_speed import realistic_init_

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        parts = torch.nn.Module()
        if family == "sam2":
            from transformers.models.sam2.modeling_sam2 import Sam2MaskDecoder, Sam2PromptEncoder

            config = tf.Sam2Config()
            parts.prompt_encoder = Sam2PromptEncoder(config.prompt_encoder_config)
            parts.mask_decoder = Sam2MaskDecoder(config.mask_decoder_config)
            prompt = config.prompt_encoder_config
            side = prompt.image_size // prompt.patch_size
        elif family == "sam_hq":
            from transformers.models.sam_hq.modeling_sam_hq import (
                SamHQMaskDecoder,
                SamHQPromptEncoder,
            )

            config = tf.SamHQConfig()
            parts.prompt_encoder = SamHQPromptEncoder(config)
            parts.mask_decoder = SamHQMaskDecoder(config.mask_decoder_config)
            side = config.prompt_encoder_config.image_embedding_size
        else:
            from transformers.models.sam.modeling_sam import SamMaskDecoder, SamPromptEncoder

            config = tf.SamConfig()
            parts.prompt_encoder = SamPromptEncoder(config)
            parts.mask_decoder = SamMaskDecoder(config.mask_decoder_config)
            side = config.prompt_encoder_config.image_embedding_size
    parts.eval()
    realistic_init_(parts, seed)
    return parts.to(dtype), side


def _features(family: str, dec, side: int, dtype: torch.dtype, gen) -> tuple[torch.Tensor, ...]:
    """Random per-image encoder features the family's decoder needs."""
    c = dec.hidden_size
    if family == "sam2":
        return (
            torch.randn(1, c // 8, 4 * side, 4 * side, generator=gen).to(dtype),
            torch.randn(1, c // 4, 2 * side, 2 * side, generator=gen).to(dtype),
        )
    if family == "sam_hq":
        vit_dim = dec.compress_vit_conv1.in_channels
        return (torch.randn(1, side, side, vit_dim, generator=gen).to(dtype),)
    return ()


def _measure(name: str, prompts: int, repeats: int, family: str = "sam") -> dict[str, Any]:
    """One family and dtype: interleaved timed rounds of both decoders."""
    from grounded_sam.sam.fast_decoder import FastMaskDecoder
    from grounded_sam.sam.hq import hq_mask_decoder

    dtype = getattr(torch, name)
    parts, side = build(dtype, family=family)
    dec = parts.mask_decoder
    gen = torch.Generator().manual_seed(1)
    emb = torch.randn(1, dec.hidden_size, side, side, generator=gen).to(dtype)
    feats = _features(family, dec, side, dtype, gen)
    grid = torch.ones(side, side)
    xy = torch.stack([grid.cumsum(1) - 0.5, grid.cumsum(0) - 0.5], dim=-1) / side
    with torch.inference_mode():
        pe = parts.prompt_encoder.shared_embedding(xy.to(dtype)).permute(2, 0, 1)[None]
        pts = (torch.rand(prompts, 1, 1, 2, generator=gen) * 1024).to(dtype)
        labels = torch.ones(prompts, 1, 1, dtype=torch.long)
        sparse, dense = parts.prompt_encoder(pts, labels, None, None)
    fast = FastMaskDecoder(dec)

    def ref():
        if family == "sam_hq":  # SysCV's data flow (transformers' forward differs, see hq.py)
            return hq_mask_decoder(
                dec, image_embeddings=emb, image_pe=pe, sparse=sparse, dense=dense,
                vit_features=feats[0], multimask_output=True, hq_token_only=False,
            )[0]  # fmt: skip
        extra = {}
        if family == "sam2":
            extra["high_resolution_features"] = [f.repeat(prompts, 1, 1, 1) for f in feats]
        return dec(
            image_embeddings=emb.repeat(prompts, 1, 1, 1),
            image_positional_embeddings=pe.repeat(prompts, 1, 1, 1),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=True,
            **extra,
        )[0][:, 0]

    def ours():
        shared = fast.prepare(emb, pe, dense[:1])
        extras = fast.prepare_features(emb, feats)
        return fast(emb, pe, sparse[:, 0], dense[:1], True, shared=shared, extras=extras)[0]

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


def run(prompts: int, repeats: int, dtypes: list[str], families=("sam",)) -> dict[str, Any]:
    """Every family and dtype in turn (rows keyed ``family/dtype``)."""
    return {
        f"{family}/{name}": _measure(name, prompts, repeats, family)
        for family in families
        for name in dtypes
    }


def table(rows: dict[str, Any], prompts: int) -> str:
    lines = [
        f"| mask decoder, {prompts} point prompts, one embedding | ours: median (min–max) | "
        "reference: median (min–max) | reference / ours | max abs delta logit |",
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
    p.add_argument("--families", nargs="+", default=["sam"], choices=FAMILIES)
    p.add_argument("--out", default="benchmarks/results/decoder_cpu")
    args = p.parse_args(argv)
    info = machine_info("cpu")
    rows = run(args.prompts, args.repeats, args.dtypes, args.families)
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
