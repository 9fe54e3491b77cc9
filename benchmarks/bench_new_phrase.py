"""Where one index and a new phrase spend their time (ours only), on a busy machine.

A compact complement to ``bench_speed.py`` for machines too loaded for its side-by-side
rounds: one full-size engine (SAM ViT-B + CLIP ViT-B-16, random weights of realistic
magnitude, the benchmark's thresholds), one image:

* ``index`` once, stage by stage (encoder, grid proposals, CLIP regions, box prefetch);
* ``--phrases`` new phrases on that index (medians), and the 80 COCO class names in one query;
* the text tower for one phrase (12 templates + 4 background phrases) at the full 77-token
  context and at the prompt length;
* optionally (``--bf16``) the same index in bfloat16 and its fidelity against float32
  (``bench_bf16.fidelity``).

CPU time (``time.process_time``) is reported next to wall time: on a shared machine the
wall time mostly measures the other jobs.

Example::

    python benchmarks/bench_new_phrase.py --phrases 5 --bf16 --out benchmarks/results/new_phrase_cpu
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine_info, summarize  # noqa: E402


class StageLog(logging.Handler):
    """Captures the engine's "Indexed ..." log line (its stage timings)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def timed(fn, *args, **kwargs) -> tuple[Any, float, float]:
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - w0, time.process_time() - c0


def main(argv: list[str] | None = None) -> None:
    from benchmarks.bench_bf16 import _load, fidelity
    from benchmarks.bench_speed import (
        COCO80,
        PhraseSource,
        _default_images,
        save_random_clip,
        save_random_sam,
    )
    from grounded_sam import load_image
    from grounded_sam.clip.text import fill_template

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--phrases", type=int, default=5)
    p.add_argument("--clip-arch", default="ViT-B-16")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--out", default="benchmarks/results/new_phrase_cpu")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    info = machine_info("cpu")
    image = load_image(_default_images(1)[0])
    handler = StageLog()
    logging.getLogger("grounded_sam.pipeline").addHandler(handler)
    logging.getLogger("grounded_sam.pipeline").setLevel(logging.INFO)
    phrases = PhraseSource()
    result: dict[str, Any] = {"machine": info, "image": _default_images(1)[0]}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        result["machine"]["loadavg_1m_now"] = round(os.getloadavg()[0], 2)
        out.with_suffix(".json").write_text(json.dumps(result, indent=2, default=str))

    with tempfile.TemporaryDirectory() as tmp:
        sam = str(save_random_sam(Path(tmp) / "sam", "vit_b"))
        clip = save_random_clip(Path(tmp) / "clip", args.clip_arch)
        gs = _load(sam, clip, "float32", 16)
        idx, wall, cpu = timed(gs.index, image)
        result["index"] = {"wall": wall, "cpu": cpu, "stages": handler.lines[-1],
                           "n_proposals": len(idx), "index_mib": idx.nbytes / 2**20}
        save()
        new = [timed(gs.query, idx, phrases()) for _ in range(args.phrases)]
        result["new_phrase"] = {"wall": summarize([w for _, w, _ in new]),
                                "cpu": summarize([c for _, _, c in new]),
                                "n_detections": [len(d) for d, _, _ in new]}
        save()
        # text tower alone: full context vs prompt length, one phrase + background phrases
        enc = gs.scorer.text_encoder
        prompts = [fill_template(t, p) for p in ["zebra crossing", *gs.background_phrases]
                   for t in enc.templates]
        tokens = enc.tokenizer(prompts)
        with torch.inference_mode():
            rows = {}
            for name, fn in (("full_77", gs.scorer.model.encode_text),
                             ("prompt_length", lambda t: enc._forward(t))):
                fn(tokens)
                runs = [timed(fn, tokens) for _ in range(3)]
                rows[name] = {"wall": summarize([w for _, w, _ in runs]),
                              "cpu": summarize([c for _, _, c in runs])}
            a = torch.nn.functional.normalize(gs.scorer.model.encode_text(tokens).float(), dim=-1)
            b = enc._forward(tokens)
            rows["max_abs_delta"] = float((a - b).abs().max())
            rows["truncate"] = enc.truncate
            rows["prompts"] = len(prompts)
        result["text_tower"] = rows
        save()
        gs.scorer.clear_text_cache()
        dets, wall, cpu = timed(gs.query, idx, list(COCO80))
        result["label_80_query"] = {"wall": wall, "cpu": cpu, "n_detections": len(dets),
                                    "images_per_min_index_plus_query_cpu":
                                    60 / (cpu + result["index"]["cpu"])}
        save()
        if args.bf16:
            g16 = _load(sam, clip, "bfloat16", 16)
            i16, wall, cpu = timed(g16.index, image)
            result["bf16_index"] = {"wall": wall, "cpu": cpu, "stages": handler.lines[-1]}
            save()
            new16 = [timed(g16.query, i16, phrases()) for _ in range(args.phrases)]
            result["bf16_new_phrase"] = {"wall": summarize([w for _, w, _ in new16]),
                                         "cpu": summarize([c for _, _, c in new16])}
            save()
            result["bf16_fidelity"] = fidelity(gs, g16, idx, i16)
            save()
    print(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
