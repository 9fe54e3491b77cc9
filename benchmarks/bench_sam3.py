"""SAM 3 as a grounder: index once, many phrases, against plain transformers calls.

One full-size ``Sam3Model`` (the released architecture, ViT 1008 px, 200 queries) with seeded
random weights of realistic magnitude (every weight matrix N(0, 1/fan_in), as
``bench_speed.realistic_init_`` does for SAM: cost does not depend on the values, but denormal
activations would make a CPU ~20x slower than with trained weights), one image, in one process:

* ``index``: SAM 3's vision encoder once (the phrase-independent part the index keeps);
* a **new phrase** on that index: its text encode + the text-conditioned detector + masks;
* **N phrases in one pass** (``--phrases``, default 20) on the index;
* **the plain way**, as transformers' docs show it, for each of the N phrases:
  ``processor(images=image, text=phrase)`` + ``model(**inputs)`` +
  ``post_process_instance_segmentation`` (``--plain`` of them; when fewer than N are run, the
  total is their mean times N and the table says so).

The threshold is set so that about ``--per-phrase`` queries pass for a probe phrase (random
weights score every query alike), and the same threshold is used on both sides; the number of
detections each side returns is printed. The timed phrases are not in the text cache. Peak
RSS and the load average are recorded, and with
``--bf16`` the index and the N-phrase pass are repeated in bfloat16 and compared with float32
(score difference, mask IoU of the same detections).

Example::

    python benchmarks/bench_sam3.py --phrases 20 --plain 20 --out benchmarks/results/sam3_cpu
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import SHARED_DATA, fmt_seconds, machine_info, summarize  # noqa: E402

PHRASES = [
    "person", "bicycle", "car", "dog", "cat", "horse", "bird", "boat", "bottle", "chair",
    "cup", "bowl", "banana", "apple", "pizza", "couch", "bed", "tv", "laptop", "book",
    "clock", "vase", "umbrella", "handbag", "tie", "kite", "skateboard", "surfboard", "bench",
    "train",
]  # fmt: skip


def realistic_init_(model: torch.nn.Module, seed: int = 0) -> None:
    """Seeded N(0, 1/fan_in) weight matrices and kernels (norms and biases as initialised)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.ndim >= 2 and "norm" not in name:
                fan_in = param[0].numel()
                param.copy_(torch.randn(param.shape, generator=generator) / fan_in**0.5)


def build(dtype: torch.dtype, seed: int = 0):
    """The full-size engine (random weights) and the transformers model + processor it wraps."""
    import transformers as tf

    from grounded_sam import GroundedSAM
    from grounded_sam.grounding.sam3_grounder import Sam3Grounder, Sam3Refiner
    from grounded_sam.sam.sam3 import Sam3Backend
    from grounded_sam.sam.sam3_tiny import clip_bpe_tokenizer

    torch.manual_seed(seed)
    model = tf.Sam3Model(tf.Sam3Config())
    realistic_init_(model, seed)
    model = model.to(dtype).eval()
    image_cls = getattr(tf, "Sam3ImageProcessor", None) or tf.Sam3ImageProcessorFast
    processor = tf.Sam3Processor(image_cls(), clip_bpe_tokenizer())
    backend = Sam3Backend(model, processor)
    gs = GroundedSAM(
        backend,
        None,
        grounder=Sam3Grounder(backend),
        refiner=Sam3Refiner(backend),
        model_ids=("random-sam3", ""),
        top_k=None,
    )
    return gs, model, processor


def _image() -> np.ndarray:
    from grounded_sam.inputs import load_image

    photos = sorted((SHARED_DATA / "coco-val-mini" / "images").glob("*.jpg"))
    if photos:
        return load_image(photos[0])
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)


def _rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def timed(fn, *args, **kwargs) -> tuple[Any, float, float]:
    """(result, wall seconds, CPU seconds of this process)."""
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - w0, time.process_time() - c0


def plain_call(model, processor, image: np.ndarray, phrase: str, threshold: float) -> dict:
    """One phrase the way transformers' docs show it: processor, model, post-processing."""
    inputs = processor(images=image, text=phrase, return_tensors="pt")
    inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
    with torch.inference_mode():
        out = model(**inputs)
    return processor.post_process_instance_segmentation(
        out, threshold=threshold, target_sizes=[image.shape[:2]]
    )[0]


def _threshold(gs, index, phrase: str, keep: int) -> float:
    backend = gs.predictor
    scores = backend.detect(index.embedding, backend.text_prompts([phrase])).scores[0]
    top = torch.sort(scores.float(), descending=True).values
    return float((top[keep - 1] + top[keep]) / 2)


def fidelity(a, b) -> dict[str, float]:
    """Mean |Δ confidence| and mean mask IoU of detections matched by query and label."""

    def key(d) -> dict[tuple[int, int], int]:
        pairs = zip(d.data["proposal_index"], d.class_id, strict=True)
        return {(int(q), int(c)): i for i, (q, c) in enumerate(pairs)}

    ka, kb = key(a), key(b)
    both = sorted(set(ka) & set(kb))
    if not both:
        return {"matched": 0, "only_fp32": len(ka), "only_bf16": len(kb)}
    ious, diffs = [], []
    for k in both:
        ma, mb = a.mask[ka[k]], b.mask[kb[k]]
        ious.append(float((ma & mb).sum() / max(1, (ma | mb).sum())))
        diffs.append(abs(float(a.confidence[ka[k]]) - float(b.confidence[kb[k]])))
    return {
        "matched": len(both),
        "only_fp32": len(ka) - len(both),
        "only_bf16": len(kb) - len(both),
        "mean_mask_iou": float(np.mean(ious)),
        "mean_abs_confidence_diff": float(np.mean(diffs)),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    image = _image()
    phrases = PHRASES[: args.phrases]
    result: dict[str, Any] = {"image_size": list(image.shape[:2]), "phrases": phrases}
    dtype = getattr(torch, args.dtype)
    (gs, model, processor), wall, _ = timed(build, dtype)
    result["build_s"] = wall
    result["dtype"] = args.dtype
    print(f"built full-size Sam3Model ({args.dtype}) in {wall:.0f}s (random weights)", flush=True)

    # warm-up: allocator, kernels, tokenizer
    index = gs.index(image)
    t = _threshold(gs, index, "a threshold probe", args.per_phrase)  # phrases stay uncached
    gs.query(index, "warm-up phrase", threshold=t)

    times: dict[str, list[dict[str, float]]] = {"index": [], "new_phrase": [], "n_phrases": []}
    for r in range(args.rounds):
        index, w, c = timed(gs.index, image)
        times["index"].append({"wall": w, "cpu": c})
        _, w, c = timed(gs.query, index, f"new phrase {r}", threshold=t)
        times["new_phrase"].append({"wall": w, "cpu": c})
        fresh = [f"{p} {r}" if r else p for p in phrases]  # not in the text cache
        ours, w, c = timed(gs.query, index, fresh, threshold=t)
        times["n_phrases"].append({"wall": w, "cpu": c})
        print(f"round {r}: index {times['index'][-1]['wall']:.1f}s, new phrase "
              f"{times['new_phrase'][-1]['wall']:.1f}s, {len(phrases)} phrases "
              f"{w:.1f}s ({len(ours)} detections)", flush=True)  # fmt: skip
    result["rss_after_ours_gb"] = _rss_gb()

    plain: list[dict[str, float]] = []
    plain_dets = 0
    for phrase in phrases[: args.plain]:
        out, w, c = timed(plain_call, model, processor, image, phrase, t)
        plain.append({"wall": w, "cpu": c})
        plain_dets += len(out["scores"])
        print(f"plain call {phrase!r}: {w:.1f}s ({len(out['scores'])} detections)", flush=True)
    result["rss_after_plain_gb"] = _rss_gb()

    med = {k: summarize([x["wall"] for x in v]) for k, v in times.items()}
    med_cpu = {k: summarize([x["cpu"] for x in v]) for k, v in times.items()}
    plain_med = summarize([x["wall"] for x in plain])
    plain_total = sum(x["wall"] for x in plain) * len(phrases) / max(1, len(plain))
    ours_pass = med["n_phrases"]["median"]
    ours_total = med["index"]["median"] + ours_pass
    result.update(
        threshold=t,
        times=times,
        plain=plain,
        medians_wall=med,
        medians_cpu=med_cpu,
        plain_median_wall=plain_med,
        plain_calls_run=len(plain),
        plain_total_wall=plain_total,
        plain_total_extrapolated=len(plain) < len(phrases),
        detections={"ours_last_pass": len(ours), "plain_calls_total": plain_dets},
        ratio_pass_vs_plain=plain_total / ours_pass,
        ratio_index_plus_pass_vs_plain=plain_total / ours_total,
    )
    if args.bf16 and dtype == torch.float32:
        result["bf16"] = _bf16(args, image, phrases, t, ours, med)
    result["load_before"] = load_before
    result["load_after"] = os.getloadavg()
    return result


def _bf16(args, image, phrases, t, ours_fp32, med_fp32) -> dict[str, Any]:
    (gs, _, _), _, _ = timed(build, torch.bfloat16)
    index = gs.index(image)
    gs.query(index, "warm-up phrase", threshold=t)
    index, w_index, _ = timed(gs.index, image)
    dets, w_pass, _ = timed(gs.query, index, phrases, threshold=t)
    return {
        "index_wall": w_index,
        "n_phrases_wall": w_pass,
        "index_speedup": med_fp32["index"]["median"] / w_index,
        "n_phrases_speedup": med_fp32["n_phrases"]["median"] / w_pass,
        "fidelity_vs_fp32": fidelity(ours_fp32, dets),
        "rss_gb": _rss_gb(),
    }


def markdown(result: dict[str, Any], info: dict[str, Any]) -> str:
    n = len(result["phrases"])
    med = result["medians_wall"]
    extrap = " (extrapolated)" if result["plain_total_extrapolated"] else ""
    lines = [
        f"SAM 3 full size, random weights, {result.get('dtype', 'float32')}, image "
        f"{result['image_size'][1]}x"
        f"{result['image_size'][0]}, threshold {result['threshold']:.4f}; "
        f"{info.get('cpu')} ({', '.join(info.get('cpu_flags', []))}), "
        f"{info.get('torch_threads')} torch threads, load {result['load_before'][0]:.1f} -> "
        f"{result['load_after'][0]:.1f}",
        "",
        "| step | wall (median) |",
        "|---|---:|",
        f"| index (vision encoder once) | {fmt_seconds(med['index']['median'])} |",
        f"| a new phrase on the index | {fmt_seconds(med['new_phrase']['median'])} |",
        f"| {n} phrases in one pass on the index | {fmt_seconds(med['n_phrases']['median'])} |",
        f"| one plain transformers call (processor + model + post-processing) | "
        f"{fmt_seconds(result['plain_median_wall']['median'])} |",
        f"| {n} plain calls{extrap} | {fmt_seconds(result['plain_total_wall'])} |",
        "",
        f"Ratio, {n} plain calls / {n} phrases in one pass: "
        f"**{result['ratio_pass_vs_plain']:.1f}x**; / (index + the pass): "
        f"**{result['ratio_index_plus_pass_vs_plain']:.1f}x**. Detections: ours "
        f"{result['detections']['ours_last_pass']} (after de-duplication), plain "
        f"{result['detections']['plain_calls_total']} (no de-duplication, "
        f"{result['plain_calls_run']} calls). Peak RSS {result['rss_after_plain_gb']:.1f} GB.",
    ]
    if "bf16" in result:
        b = result["bf16"]
        lines += [
            "",
            f"bfloat16: index {fmt_seconds(b['index_wall'])} ({b['index_speedup']:.2f}x), "
            f"{n} phrases {fmt_seconds(b['n_phrases_wall'])} ({b['n_phrases_speedup']:.2f}x); "
            f"against float32: {json.dumps(b['fidelity_vs_fp32'])}",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--phrases", type=int, default=20, help="phrases in the one-pass query")
    p.add_argument("--plain", type=int, default=20, help="plain transformers calls timed")
    p.add_argument("--rounds", type=int, default=1, help="rounds of index / phrase / pass")
    p.add_argument("--per-phrase", type=int, default=5, help="detections the threshold keeps")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--bf16", action="store_true", help="also bfloat16, and its fidelity")
    p.add_argument(
        "--dtype",
        choices=["float32", "bfloat16"],
        default="float32",
        help="dtype of the whole comparison, ours and the plain calls (bfloat16: the 20 plain "
        "calls fit a session on a CPU with AMX; --bf16 is then moot)",
    )
    p.add_argument("--out", type=Path, default=None, help="write OUT.json and OUT.md")
    args = p.parse_args(argv)
    if not 1 <= args.phrases <= len(PHRASES):
        p.error(f"--phrases must be in [1, {len(PHRASES)}]")
    info = machine_info("cpu")
    result = run(args)
    text = markdown(result, info)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        doc = {"machine": info, "args": vars(args) | {"out": str(args.out)}, "result": result}
        args.out.with_suffix(".json").write_text(json.dumps(doc, indent=1, default=str))
        args.out.with_suffix(".md").write_text(text)


if __name__ == "__main__":
    main()
