"""What bfloat16 costs and buys on this CPU: speed and fidelity against float32.

The same random full-size weights (SAM ViT-B, CLIP ViT-B-16 by default; see ``bench_speed``)
are loaded twice, in float32 and in bfloat16, with the benchmark's settings. Per image:

* **speed**: ``index`` and a new phrase, the two dtypes interleaved (one warm-up, then
  ``--repeats`` rounds), medians;
* **fidelity of SAM**: the float32 index's proposal boxes decoded by both models (each on its
  own image embedding), masks at full resolution: mask IoU per box and |delta predicted IoU|;
* **fidelity end to end**: ``query`` with the same phrases on each dtype's own index; every
  float32 detection is matched to the bfloat16 detection of the same phrase with the highest
  mask IoU: that IoU, and |delta confidence| of the pair.

Example::

    python benchmarks/bench_bf16.py --images 1 --repeats 2 --out benchmarks/results/bf16_cpu
    python benchmarks/bench_bf16.py --sam sam2.1_t --out benchmarks/results/bf16_cpu_sam2_1_t

``--sam`` picks the SAM back-end (``vit_b`` default, or one of ``bench_backends.MODELS``:
``hq_vit_b``, ``sam2.1_t`` ... ``sam2.1_l``), built full size with the same realistic random
weights as ``bench_backends``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import fmt_seconds, machine_info, summarize  # noqa: E402

PHRASES = ("person", "car", "dog", "tree", "building")


def _load(sam: str, clip: str, dtype: str, points_per_side: int):
    from grounded_sam import EverythingSettings, GroundedSAM

    settings = EverythingSettings(
        points_per_side=points_per_side, points_per_batch=64, pred_iou_thresh=0.0,
        stability_score_thresh=0.9, box_nms_thresh=1.0,
    )
    return GroundedSAM.from_pretrained(
        sam=sam, clip=clip, device="cpu", dtype=dtype, proposal_settings=settings,
        max_regions=100, threshold=0.0, top_k=10, refine=0,
    )


def _iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    inter = (a & b).flatten(1).sum(1).float()
    union = (a | b).flatten(1).sum(1).float()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


def fidelity(gs32, gs16, idx32, idx16) -> dict[str, Any]:
    """SAM box decodes and end-to-end detections of bfloat16 against float32."""
    boxes = idx32.proposals.boxes
    with torch.inference_mode():
        o32 = gs32.predictor.decode(idx32.embedding, boxes=boxes, multimask_output=False)
        o16 = gs16.predictor.decode(idx16.embedding, boxes=boxes, multimask_output=False)
        m32 = gs32.predictor.upscale(idx32.embedding, o32.low_res_logits)[:, 0] > 0
        m16 = gs16.predictor.upscale(idx16.embedding, o16.low_res_logits)[:, 0] > 0
    box_iou = _iou(m32, m16)
    d_pred_iou = (o32.iou_scores - o16.iou_scores).abs()
    d32 = gs32.query(idx32, list(PHRASES))
    d16 = gs16.query(idx16, list(PHRASES))
    ious, dconf = [], []
    for i in range(len(d32)):
        same = np.nonzero(d16.class_id == d32.class_id[i])[0]
        if len(same) == 0:
            ious.append(0.0)
            continue
        a = torch.from_numpy(d32.mask[i])[None]
        b = torch.from_numpy(d16.mask[same])
        iou = _iou(a.expand_as(b), b)
        j = int(iou.argmax())
        ious.append(float(iou[j]))
        dconf.append(abs(float(d32.confidence[i]) - float(d16.confidence[same[j]])))
    region_cos = torch.nn.functional.cosine_similarity(
        idx32.region_embeddings.float()[: len(idx16)],
        idx16.region_embeddings.float()[: len(idx32)],
    ) if len(idx32) == len(idx16) else torch.zeros(0)
    return {
        "box_mask_iou": {"mean": float(box_iou.mean()), "min": float(box_iou.min()),
                         "p05": float(box_iou.quantile(0.05)), "n": int(box_iou.numel())},
        "box_abs_delta_pred_iou": {"mean": float(d_pred_iou.mean()),
                                   "max": float(d_pred_iou.max())},
        "e2e_matched_mask_iou": {"mean": float(np.mean(ious)) if ious else float("nan"),
                                 "min": float(np.min(ious)) if ious else float("nan"),
                                 "n": len(ious)},
        "e2e_abs_delta_confidence": {"mean": float(np.mean(dconf)) if dconf else float("nan"),
                                     "max": float(np.max(dconf)) if dconf else float("nan")},
        "n_proposals": {"float32": len(idx32), "bfloat16": len(idx16)},
        "n_detections": {"float32": len(d32), "bfloat16": len(d16)},
        "same_proposal_count_region_cos_min": float(region_cos.min()) if region_cos.numel()
        else None,
    }


def main(argv: list[str] | None = None) -> None:
    from benchmarks.bench_speed import (
        PhraseSource,
        _default_images,
        save_random_clip,
        save_random_sam,
    )
    from grounded_sam import load_image

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=1)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--clip-arch", default="ViT-B-16")
    p.add_argument("--sam", default="vit_b", help="vit_b, or a bench_backends model name")
    p.add_argument("--points-per-side", type=int, default=16)
    p.add_argument("--out", default="benchmarks/results/bf16_cpu")
    args = p.parse_args(argv)
    info = machine_info("cpu")
    images = _default_images(args.images)
    arrays = [load_image(x) for x in images]
    phrases = PhraseSource()
    with tempfile.TemporaryDirectory() as tmp:
        if args.sam == "vit_b":
            sam = str(save_random_sam(Path(tmp) / "sam", "vit_b"))
        else:
            from benchmarks.bench_backends import build_model

            sam = str(Path(tmp) / "sam")
            build_model(args.sam).save_pretrained(sam)
        clip = save_random_clip(Path(tmp) / "clip", args.clip_arch)
        models = {d: _load(sam, clip, d, args.points_per_side) for d in ("float32", "bfloat16")}
        times: dict[str, dict[str, list[float]]] = {d: {"index": [], "new_phrase": []}
                                                    for d in models}
        fid = []
        for r in range(args.repeats + 1):  # round 0 is the warm-up
            for i, arr in enumerate(arrays):
                idx = {}
                for d in (("float32", "bfloat16") if (r + i) % 2 == 0 else ("bfloat16", "float32")):
                    gs = models[d]
                    t0 = time.perf_counter()
                    idx[d] = gs.index(arr)
                    t1 = time.perf_counter()
                    gs.query(idx[d], phrases())
                    t2 = time.perf_counter()
                    if r > 0:
                        times[d]["index"].append(t1 - t0)
                        times[d]["new_phrase"].append(t2 - t1)
                if r == 0:
                    fid.append(fidelity(models["float32"], models["bfloat16"], idx["float32"],
                                        idx["bfloat16"]))
                print(f"round {r} image {i} done", file=sys.stderr, flush=True)
    info["loadavg_1m_end"] = round(os.getloadavg()[0], 2)
    summary = {d: {k: summarize(v) for k, v in t.items()} for d, t in times.items()}
    lines = [
        "| stage (seconds per image) | float32 | bfloat16 | float32 / bfloat16 |",
        "|---|---|---|---:|",
    ]
    for k in ("index", "new_phrase"):
        a, b = summary["float32"][k], summary["bfloat16"][k]
        lines.append(
            f"| {k} | {fmt_seconds(a['median'])} ({fmt_seconds(a['min'])}–"
            f"{fmt_seconds(a['max'])}) | {fmt_seconds(b['median'])} ({fmt_seconds(b['min'])}–"
            f"{fmt_seconds(b['max'])}) | {a['median'] / b['median']:.2f}× |"
        )
    lines += ["", "| fidelity of bfloat16 vs float32 (same weights, same images) | value |",
              "|---|---|"]
    for n, f in enumerate(fid):
        lines += [
            f"| image {n}: SAM box masks, mask IoU mean / 5th pct / min "
            f"(n={f['box_mask_iou']['n']}) | {f['box_mask_iou']['mean']:.4f} / "
            f"{f['box_mask_iou']['p05']:.4f} / "
            f"{f['box_mask_iou']['min']:.4f} |",
            f"| image {n}: SAM predicted IoU, abs delta mean / max | "
            f"{f['box_abs_delta_pred_iou']['mean']:.4f} / "
            f"{f['box_abs_delta_pred_iou']['max']:.4f} |",
            f"| image {n}: end to end, matched detections' mask IoU mean / min "
            f"(n={f['e2e_matched_mask_iou']['n']}) | {f['e2e_matched_mask_iou']['mean']:.4f} / "
            f"{f['e2e_matched_mask_iou']['min']:.4f} |",
            f"| image {n}: end to end, abs delta confidence mean / max | "
            f"{f['e2e_abs_delta_confidence']['mean']:.4f} / "
            f"{f['e2e_abs_delta_confidence']['max']:.4f} |",
            f"| image {n}: proposals float32 / bfloat16 | {f['n_proposals']['float32']} / "
            f"{f['n_proposals']['bfloat16']} |",
        ]
    md = "\n".join(lines) + "\n"
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(
        {"machine": info, "sam": args.sam, "images": images, "times": times, "summary": summary,
         "fidelity": fid, "command": " ".join([Path(sys.executable).name, *sys.argv])},
        indent=2))
    out.with_suffix(".md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
