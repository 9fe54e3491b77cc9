"""Speed, side by side: our engine vs. the SAM + CLIP pipeline people assemble today.

One command, one run. Both pipelines get the same weights (our transformers ``SamModel`` is
converted into Meta's ``Sam`` with an explicit, strict key mapping; both CLIPs load one
open_clip folder), the same images, the same grid and thresholds, score the same number of
regions with CLIP and re-prompt the same number of boxes; the counts are printed.

* **ours**: ``gs.index(image)`` + ``gs.query(index, phrase)`` with ``max_regions`` regions
  scored and exactly ``n_boxes`` boxes re-prompted (``threshold=0``, ``top_k=n_boxes``,
  ``refine=0``);
* **reference** (:mod:`benchmarks.reference_pipeline`): Meta's ``SamAutomaticMaskGenerator``
  → top regions by predicted IoU → per-crop PIL + open_clip preprocess → one CLIP forward →
  Meta ``SamPredictor`` (fresh ``set_image``, as people do) with the top boxes;
* **transformers** ``pipeline("mask-generation")`` at the same grid, for the proposal stage.

Timings run in one process, the pipelines interleaved round by round so that machine noise
hits both alike. Stages are timed inside the end-to-end runs (no extra passes): image encoder,
proposal generation (encoder excluded), CLIP region scoring, text, box re-prompt, end to end,
and a new phrase on an already indexed image (ours: ``query`` on the kept index; the
reference has no index, so its cost is a full re-run, i.e. its end-to-end time). Peak memory
is measured in two fresh subprocesses, one per pipeline (``VmHWM`` reset after the models
are loaded, then one end-to-end run on the largest image).

Configurations (``--config``):

* ``cpu`` (default): SAM ViT-B (full size), 16×16 grid, CLIP ViT-B-16 (the product's
  default; ``--clip-arch ViT-B-32`` for the smaller one), float32;
* ``cuda``: SAM ViT-H, 32×32 grid, CLIP ViT-B-16, our best dtype (float16; ``--dtype
  bfloat16`` for bf16) vs. the reference in float32 (Meta's code path), with and without
  ``--compile``; the GPU model is reported. Targets on an H100/H200: index <= 60 ms, new
  phrase <= 5 ms. Commands::

      python benchmarks/bench_speed.py --config cuda --images 3 --repeats 5 \
          --out benchmarks/results/speed_cuda
      python benchmarks/bench_speed.py --config cuda --images 3 --repeats 5 --compile \
          --out benchmarks/results/speed_cuda_compiled

Random weights (seeded) are used unless ``--sam`` / ``--clip`` name real ones: full-size
architectures cost the same with any weights (see :func:`realistic_init_` for why the weights
are re-scaled). Random masks overlap heavily and few are confident, so with random weights the
defaults are ``pred_iou_thresh=0``, ``stability_score_thresh=0.9`` and ``box_nms_thresh=1.0``
(NMS off), the same on both sides, so that at least ``--regions`` proposals survive; with real
SAM weights Meta's defaults (0.88 / 0.95 / 0.7) apply. Counts are always printed.

Results of a run on this project's CI machine, with the analysis of where the time goes, are in
``benchmarks/RESULTS.md``.

Example::

    python benchmarks/bench_speed.py --images 3 --repeats 3 --out benchmarks/results/speed_cpu
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (  # noqa: E402
    SHARED_DATA,
    ensure_repo_on_path,
    fmt_seconds,
    machine_info,
    summarize,
)

logger = logging.getLogger("benchmarks.bench_speed")

CONFIGS: dict[str, dict[str, Any]] = {
    "cpu": {"device": "cpu", "sam_arch": "vit_b", "points_per_side": 16, "clip_arch": "ViT-B-16",
            "dtype": "float32"},
    "cuda": {"device": "cuda", "sam_arch": "vit_h", "points_per_side": 32,
             "clip_arch": "ViT-B-16", "dtype": "float16"},
}

SAM_ARCHS: dict[str, dict[str, Any]] = {
    "vit_b": {},  # transformers SamVisionConfig defaults are ViT-B
    "vit_l": {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
              "global_attn_indexes": [5, 11, 17, 23]},
    "vit_h": {"hidden_size": 1280, "num_hidden_layers": 32, "num_attention_heads": 16,
              "global_attn_indexes": [7, 15, 23, 31]},
}

DEFAULT_IMAGES = (
    "coco-val-mini/images/000000573008.jpg",  # 640x480 street scene
    "fruits/images/0.jpg",  # 800x600
    "coco-val-crowded/images/000000565004.jpg",  # 640x427 crowded
)

#: Phrases used for queries; every query uses a phrase never seen before by the text cache.
PHRASES = (
    "dog", "person", "car", "bicycle", "banana", "umbrella", "traffic light", "horse", "bus",
    "cup", "chair", "bird", "boat", "bottle", "kite", "pizza", "clock", "train", "truck",
    "motorcycle", "sheep", "cow", "bench", "laptop", "apple", "orange", "broccoli", "cake",
    "couch", "bed", "book", "vase", "zebra", "giraffe", "elephant", "handbag", "tie",
    "surfboard", "skateboard", "frisbee", "fig", "date", "hazelnut", "red car", "white dog",
    "the tall man", "green apple", "a wooden table", "street sign", "window",
)


#: The 80 COCO class names (the labeling-throughput row).
COCO80 = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich",
    "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote",
    "keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book",
    "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
)


class PhraseSource:
    """Hands out phrases that have not been used yet (so text caches never help)."""

    def __init__(self) -> None:
        self._i = 0

    def __call__(self) -> str:
        phrase = PHRASES[self._i % len(PHRASES)]
        if self._i >= len(PHRASES):
            phrase = f"{phrase} {self._i // len(PHRASES)}"
        self._i += 1
        return phrase


# ------------------------------------------------------------------------------ models


def save_random_sam(directory: Path, arch: str, seed: int = 0) -> Path:
    """A full-size transformers SamModel with seeded random weights, ``save_pretrained``."""
    from transformers import SamConfig, SamModel, SamVisionConfig

    config = SamConfig(vision_config=SamVisionConfig(**SAM_ARCHS[arch]).to_dict())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SamModel(config).eval()
    realistic_init_(model, seed)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    return directory


def realistic_init_(model: torch.nn.Module, seed: int = 0) -> None:
    """Give a random SamModel weights of realistic magnitude (in place).

    transformers initialises the SAM vision encoder with ``initializer_range=1e-10``: every
    activation of the encoder is then a denormal float, which x86 CPUs process ~20× slower
    than normal floats, so timings would say nothing about real checkpoints. As in
    ``grounded_sam.sam.tiny``: every weight matrix / conv kernel / positional table gets
    N(0, 1/fan_in) entries, the prompt encoder's random Fourier matrix N(0, 1) as in Meta's
    code, and the mask heads' output layer is sharpened so that masks have structure
    (stability scores and thresholds then behave roughly as with trained weights).
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "positional_embedding" in name:
                param.copy_(torch.randn(param.shape, generator=generator))
            elif param.ndim >= 2 and "layer_norm" not in name:
                fan_in = param[0].numel()
                param.copy_(torch.randn(param.shape, generator=generator) / fan_in**0.5)
        for name, param in model.named_parameters():
            if "output_hypernetworks_mlps" in name and "proj_out" in name:
                param.mul_(30.0)
        # One kernel tap for all 2x2 positions of the mask upscaling (compute unchanged):
        # independent random taps give a 4x4 checkerboard in every mask, i.e. speckled masks
        # with ~10x more RLE runs than real ones, which would inflate the reference's
        # full-resolution RLE post-processing.
        for conv in (model.mask_decoder.upscale_conv1, model.mask_decoder.upscale_conv2):
            conv.weight.copy_(conv.weight[:, :, :1, :1].expand_as(conv.weight))


def save_random_clip(directory: Path, arch: str, seed: int = 0) -> str:
    """An open_clip model with seeded random weights in ``local-dir:`` layout."""
    import open_clip
    from safetensors.torch import save_file

    model_cfg = open_clip.get_model_config(arch)
    if model_cfg is None:
        raise ValueError(f"unknown open_clip architecture {arch!r}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = open_clip.create_model(arch, pretrained=None)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(directory / "open_clip_model.safetensors"))
    cfg = {
        "model_cfg": model_cfg,
        "preprocess_cfg": {
            "mean": list(open_clip.OPENAI_DATASET_MEAN),
            "std": list(open_clip.OPENAI_DATASET_STD),
            "interpolation": "bicubic",
            "resize_mode": "shortest",
        },
    }
    (directory / "open_clip_config.json").write_text(json.dumps(cfg, indent=2))
    return f"local-dir:{directory}"


def save_meta_checkpoint(sam_spec: str, path: Path) -> None:
    """Convert our SAM (id or folder) into a Meta ``Sam`` state dict + its SamConfig."""
    from grounded_sam.sam.loading import load_sam_model

    ensure_repo_on_path()
    from tests.sam.reference import convert_state_dict

    model = load_sam_model(sam_spec, torch.device("cpu"), torch.float32)
    torch.save(convert_state_dict(model.state_dict(), model.config), path)
    model.config.to_json_file(str(path.with_suffix(".config.json")))
    del model
    gc.collect()


def load_meta_sam(path: Path, device: str) -> torch.nn.Module:
    """Meta ``Sam`` from a converted checkpoint (as people load ``sam_vit_*.pth``)."""
    from transformers import SamConfig

    ensure_repo_on_path()
    from tests.sam.reference import build_meta_sam

    config = SamConfig.from_json_file(str(path.with_suffix(".config.json")))
    sam = build_meta_sam(config)
    sam.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
    return sam.to(device).eval()


# ------------------------------------------------------------------------------ sides


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Ours:
    """Our engine, with timers around the stages of ``index`` and ``query``."""

    def __init__(self, spec: dict[str, Any]) -> None:
        import grounded_sam.pipeline as pipeline_mod
        from grounded_sam import EverythingSettings, GroundedSAM

        settings = EverythingSettings(
            points_per_side=spec["points_per_side"],
            points_per_batch=spec["points_per_batch"],
            pred_iou_thresh=spec["pred_iou_thresh"],
            stability_score_thresh=spec["stability_score_thresh"],
            box_nms_thresh=spec["box_nms_thresh"],
        )
        self.gs = GroundedSAM.from_pretrained(
            sam=spec["sam"],
            clip=spec["clip"],
            device=spec["device"],
            dtype=spec["dtype"],
            crop_style=spec["crop_style"],
            proposal_settings=settings,
            max_regions=spec["n_regions"],
            threshold=0.0,
            top_k=spec["n_boxes"],
            refine=0,
            prefetch_boxes=spec.get("prefetch_boxes", True),
            compile=spec.get("compile", False),
        )
        self.device = self.gs.device
        self.t: dict[str, float] = {}
        self.boxes_decoded = 0
        gs = self.gs
        self._timed(gs.predictor, "encode", "encoder")
        self._timed(gs.scorer, "encode_text", "text")
        decode = gs.predictor.decode

        def counting_decode(*args: Any, **kwargs: Any):
            if kwargs.get("boxes") is not None:
                self.boxes_decoded += int(kwargs["boxes"].shape[0])
            return decode(*args, **kwargs)

        gs.predictor.decode = counting_decode
        generate = pipeline_mod.generate_proposals

        def timed_generate(*args: Any, **kwargs: Any):
            t0 = time.perf_counter()
            out = generate(*args, **kwargs)
            _sync(self.device)
            self.t["proposals"] = self.t.get("proposals", 0.0) + time.perf_counter() - t0
            return out

        pipeline_mod.generate_proposals = timed_generate
        boxes_fn = pipeline_mod.region_box_masks

        def timed_boxes(*args: Any, **kwargs: Any):
            t0 = time.perf_counter()
            out = boxes_fn(*args, **kwargs)
            _sync(self.device)
            self.t["boxes"] = self.t.get("boxes", 0.0) + time.perf_counter() - t0
            return out

        pipeline_mod.region_box_masks = timed_boxes

    def _timed(self, obj: Any, name: str, key: str) -> None:
        fn = getattr(obj, name)

        def wrapper(*args: Any, **kwargs: Any):
            t0 = time.perf_counter()
            out = fn(*args, **kwargs)
            _sync(self.device)
            self.t[key] = self.t.get(key, 0.0) + time.perf_counter() - t0
            return out

        setattr(obj, name, wrapper)

    def e2e(self, image: np.ndarray, phrase: str) -> tuple[dict[str, Any], Any]:
        """index + query from scratch (text cache cleared, so the text tower runs too)."""
        self.gs.scorer.clear_text_cache()
        self.t = {}
        self.boxes_decoded = 0
        t0 = time.perf_counter()
        index = self.gs.index(image)
        _sync(self.device)
        t1 = time.perf_counter()
        prefetch = self.t.get("boxes", 0.0)
        boxes_in_index = self.boxes_decoded
        text_before = self.t.get("text", 0.0)
        dets = self.gs.query(index, phrase)
        _sync(self.device)
        t2 = time.perf_counter()
        text = self.t.get("text", 0.0) - text_before
        row = {
            "encoder": self.t["encoder"],
            "proposals": self.t["proposals"],
            "clip_regions": (t1 - t0) - self.t["encoder"] - self.t["proposals"] - prefetch,
            "box_prefetch": prefetch,
            "n_boxes_index": boxes_in_index,
            "text": text,
            "box_decode": (t2 - t1) - text,
            "total": t2 - t0,
            "n_proposals": len(index),
            "n_scored": int(index.region_embeddings.shape[0]),
            "n_boxes": self.boxes_decoded - boxes_in_index,
            "index_mib_after_query": index.nbytes / 2**20,
            "n_detections": len(dets),
        }
        return row, index

    def label(self, image: np.ndarray, classes: tuple[str, ...]) -> dict[str, Any]:
        """What ``grounded-sam label`` does per image: index + one query with all classes
        (text cache cleared first, so the 80 x 12 prompts are encoded too)."""
        self.gs.scorer.clear_text_cache()
        self.boxes_decoded = 0
        t0 = time.perf_counter()
        index = self.gs.index(image)
        dets = self.gs.query(index, list(classes))
        _sync(self.device)
        return {"total": time.perf_counter() - t0, "n_boxes": self.boxes_decoded,
                "n_detections": len(dets)}

    def new_phrase(self, index: Any, phrase: str) -> dict[str, Any]:
        """A phrase never seen before, on a kept index."""
        self.boxes_decoded = 0
        t0 = time.perf_counter()
        dets = self.gs.query(index, phrase)
        _sync(self.device)
        return {"total": time.perf_counter() - t0, "n_boxes": self.boxes_decoded,
                "n_detections": len(dets)}


def build_reference(spec: dict[str, Any]):
    """The reference pipeline on the same weights (see benchmarks/reference_pipeline.py)."""
    import open_clip

    from benchmarks.reference_pipeline import ReferencePipeline
    from grounded_sam.clip.loading import parse_clip_spec
    from grounded_sam.clip.regions import make_region_crop_pil, mean_fill_color
    from grounded_sam.clip.text import DEFAULT_TEMPLATES
    from grounded_sam.grounding.scoring import DEFAULT_BACKGROUND_PHRASES

    device = spec["device"]
    sam = load_meta_sam(Path(spec["meta_checkpoint"]), device)
    parsed = parse_clip_spec(spec["clip"])
    clip_model, _, preprocess = open_clip.create_model_and_transforms(
        parsed.model_name, pretrained=parsed.pretrained, device=device,
        force_quick_gelu=parsed.force_quick_gelu,
    )
    clip_model.eval()
    tokenizer = open_clip.get_tokenizer(parsed.model_name)
    visual = clip_model.visual
    cfg = dict(getattr(visual, "preprocess_cfg", None) or {})
    size = cfg.get("size", visual.image_size)
    out_size = (size, size) if isinstance(size, int) else tuple(size)[-2:]
    fill = mean_fill_color(cfg.get("mean", open_clip.OPENAI_DATASET_MEAN))

    def make_crop(image: np.ndarray, box: np.ndarray, mask: np.ndarray):
        return make_region_crop_pil(image, box, mask, spec["crop_style"], out_size=out_size,
                                    fill=fill)

    amg_kwargs = {
        "points_per_side": spec["points_per_side"],
        "points_per_batch": spec["points_per_batch"],
        "pred_iou_thresh": spec["pred_iou_thresh"],
        "stability_score_thresh": spec["stability_score_thresh"],
        "box_nms_thresh": spec["box_nms_thresh"],
    }
    return ReferencePipeline(
        sam, clip_model, preprocess, tokenizer, make_crop, amg_kwargs,
        templates=DEFAULT_TEMPLATES, background_phrases=DEFAULT_BACKGROUND_PHRASES,
        n_regions=spec["n_regions"], n_boxes=spec["n_boxes"],
    )


def reference_e2e(ref, image: np.ndarray, phrase: str) -> dict[str, Any]:
    run, _ = ref.run(image, phrase)
    return {
        "encoder": run.encoder, "proposals": run.proposals, "clip_regions": run.clip_regions,
        "text": run.text, "reencode": run.reencode, "box_decode": run.box_decode,
        "total": run.total, "total_reusing_embedding": run.total - run.reencode,
        "n_proposals": run.n_masks, "n_scored": run.n_scored, "n_boxes": run.n_boxes,
    }


class HFMaskGeneration:
    """transformers ``pipeline("mask-generation")`` on our SamModel; encoder pass cached.

    The encoder pass is timed separately (first call per image) and then served from a cache
    for the timed calls, so the timed number is the pipeline's proposal stage only, like the
    ``proposals`` stage of the other two.
    """

    def __init__(self, model, spec: dict[str, Any]) -> None:
        from transformers import SamImageProcessor, pipeline

        self.model = model
        self.spec = spec
        side = int(model.config.vision_config.image_size)
        processor = SamImageProcessor(
            size={"longest_edge": side},
            pad_size={"height": side, "width": side},
            mask_size={"longest_edge": side // 4},
        )
        self.pipe = pipeline(
            "mask-generation", model=model, image_processor=processor,
            device=torch.device(spec["device"]), points_per_batch=spec["points_per_batch"],
        )
        self._cache: list[tuple[torch.Tensor, torch.Tensor]] = []

    @contextlib.contextmanager
    def _cached_encoder(self) -> Iterator[None]:
        original = self.model.get_image_embeddings

        def cached(pixel_values: torch.Tensor, *args: Any, **kwargs: Any):
            for key, value in self._cache:
                if key.shape == pixel_values.shape and torch.equal(key, pixel_values):
                    return value
            value = original(pixel_values, *args, **kwargs)
            self._cache.append((pixel_values.clone(), value))
            return value

        self.model.get_image_embeddings = cached
        try:
            yield
        finally:
            del self.model.get_image_embeddings  # back to the class method

    def __call__(self, image: np.ndarray) -> dict[str, Any]:
        from PIL import Image

        pil = Image.fromarray(image)
        with self._cached_encoder():
            t0 = time.perf_counter()
            out = self.pipe(
                pil,
                points_per_crop=self.spec["points_per_side"],
                pred_iou_thresh=self.spec["pred_iou_thresh"],
                stability_score_thresh=self.spec["stability_score_thresh"],
                crops_nms_thresh=self.spec["box_nms_thresh"],
            )
            _sync(torch.device(self.spec["device"]))
            dt = time.perf_counter() - t0
        return {"proposals": dt, "n_proposals": len(out["masks"])}


# ------------------------------------------------------------------------------ memory


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def memory_worker(spec: dict[str, Any], side: str, image_path: str) -> dict[str, Any]:
    """Peak RSS of one end-to-end run (models already loaded) in this fresh process."""
    from grounded_sam import load_image

    image = load_image(image_path)
    phrases = PhraseSource()
    if side == "ours":
        ours = Ours(spec)
        run: Callable[[], Any] = lambda: ours.e2e(image, phrases())  # noqa: E731
    else:
        ref = build_reference(spec)
        run = lambda: reference_e2e(ref, image, phrases())  # noqa: E731
    gc.collect()
    cuda = spec["device"].startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    loaded = _rss_kib("VmRSS")
    reset = _reset_peak_rss()
    t0 = time.perf_counter()
    run()
    elapsed = time.perf_counter() - t0
    peak = _rss_kib("VmHWM")
    out = {
        "side": side,
        "image": image_path,
        "rss_after_load_mib": loaded / 1024,
        "peak_rss_mib": peak / 1024,
        "peak_above_load_mib": (peak - loaded) / 1024,
        "peak_reset_after_load": reset,
        "seconds": elapsed,
    }
    if cuda:
        out["cuda_peak_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def run_memory_subprocess(spec_path: Path, side: str, image: str) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", f"memory-{side}",
           "--spec", str(spec_path), "--worker-image", image]
    logger.info("memory worker: %s", " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"memory worker {side} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------ timing


def timing_run(spec: dict[str, Any], images: list[str], repeats: int, new_phrases: int,
               hf: bool, profile: bool = False, label: bool = False,
               on_round: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """All timed runs, interleaved, in this process (``on_round`` gets the partial result
    after every round, so a run cut short still leaves its finished rounds behind)."""
    from grounded_sam import load_image

    arrays = [load_image(p) for p in images]
    phrases = PhraseSource()
    logger.info("loading our engine")
    ours = Ours(spec)
    logger.info("loading the reference pipeline")
    ref = build_reference(spec)
    hfp = HFMaskGeneration(ours.gs.predictor.model, spec) if hf else None
    rows: dict[str, list[dict[str, Any]]] = {"ours": [], "ours_new": [], "ref": [], "hf": [],
                                             "ours_label": [], "ref_label": []}
    last_embedding = None

    logger.info("warm-up on %s", images[0])
    ours_row, _ = ours.e2e(arrays[0], phrases())
    ref_row = reference_e2e(ref, arrays[0], phrases())
    warmup = {"ours": ours_row, "ref": ref_row}
    if hfp is not None:
        for i, arr in enumerate(arrays):  # fills the embedding cache; first call is untimed
            t0 = time.perf_counter()
            first = hfp(arr)
            warmup[f"hf_first_call_{i}"] = {**first, "total_with_encoder": time.perf_counter() - t0}

    for r in range(repeats):
        for i, arr in enumerate(arrays):
            order = ("ours", "ref") if (r + i) % 2 == 0 else ("ref", "ours")
            for side in order:
                if side == "ours":
                    row, index = ours.e2e(arr, phrases())
                    rows["ours"].append({"round": r, "image": i, **row})
                    for _ in range(new_phrases):
                        rows["ours_new"].append(
                            {"round": r, "image": i, **ours.new_phrase(index, phrases())}
                        )
                    if i == 0:
                        last_embedding = index.embedding
                    del index
                else:
                    rows["ref"].append({"round": r, "image": i,
                                        **reference_e2e(ref, arr, phrases())})
                logger.info("round %d image %d %s: %.2fs", r, i, side,
                            (rows[side][-1])["total"])
            if label:
                for side in order:
                    key = f"{side}_label"
                    got = ours.label(arr, COCO80) if side == "ours" else ref.label(arr, COCO80)
                    rows[key].append({"round": r, "image": i, **got})
                    logger.info("round %d image %d %s label: %.2fs", r, i, side, got["total"])
            if hfp is not None:
                rows["hf"].append({"round": r, "image": i, **hfp(arr)})
                logger.info("round %d image %d hf proposals: %.2fs", r, i,
                            rows["hf"][-1]["proposals"])
            gc.collect()
        if on_round is not None:
            on_round({"warmup": warmup, "rows": rows, "rounds_done": r + 1})
    out: dict[str, Any] = {"warmup": warmup, "rows": rows}
    if profile:
        out["profile"] = profile_proposals(ours, ref, arrays[0], last_embedding)
    return out


def profile_proposals(ours: Ours, ref, image: np.ndarray, embedding: Any) -> dict[str, str]:
    """torch.profiler op tables of the proposal stage (the slowest stage) of both sides."""
    from torch.profiler import ProfilerActivity, profile

    from grounded_sam.sam.everything import generate_proposals

    tables: dict[str, str] = {}
    gs = ours.gs
    settings = gs.proposal_settings
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        generate_proposals(gs.predictor, image, settings, embedding=embedding)
        wall = time.perf_counter() - t0
    tables["ours"] = f"wall {wall:.2f}s\n" + prof.key_averages().table(
        sort_by="self_cpu_time_total", row_limit=15)
    amg = ref.amg
    amg.predictor.set_image(image)
    original = amg.predictor.set_image, amg.predictor.reset_image
    amg.predictor.set_image = lambda *a, **k: None
    amg.predictor.reset_image = lambda *a, **k: None
    try:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            t0 = time.perf_counter()
            amg.generate(image)
            wall = time.perf_counter() - t0
    finally:
        amg.predictor.set_image, amg.predictor.reset_image = original
        amg.predictor.reset_image()
    tables["reference_amg"] = f"wall {wall:.2f}s\n" + prof.key_averages().table(
        sort_by="self_cpu_time_total", row_limit=15)
    return tables


def _per_round_means(rows: list[dict[str, Any]], key: str) -> list[float]:
    """Per round: the mean over images of ``key`` (seconds per image)."""
    rounds: dict[int, list[float]] = {}
    for row in rows:
        if key in row:
            rounds.setdefault(row["round"], []).append(float(row[key]))
    return [float(np.mean(v)) for _, v in sorted(rounds.items())]


def _counts(rows: list[dict[str, Any]], key: str) -> str:
    values = sorted({int(r[key]) for r in rows if key in r})
    return "/".join(str(v) for v in values) if values else "-"


def build_tables(result: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Markdown tables and the summary numbers."""
    rows = result["timing"]["rows"]
    stages = [
        ("image encoder", "encoder", "encoder", "ours", "ref"),
        ("proposals: grid decode + filter, encoder excluded (vs SamAutomaticMaskGenerator)",
         "proposals", "proposals", "ours", "ref"),
        ("proposals vs transformers pipeline('mask-generation')", "proposals", "proposals",
         "ours", "hf"),
        (f"CLIP region scoring ({_counts(rows['ours'], 'n_scored')} vs "
         f"{_counts(rows['ref'], 'n_scored')} regions)", "clip_regions", "clip_regions",
         "ours", "ref"),
        (f"box prompts of all proposals decoded in index ({_counts(rows['ours'], 'n_boxes_index')}"
         " boxes; ours only)", "box_prefetch", None, "ours", "ref"),
        ("text tower (phrase + background phrases, 12 templates)", "text", "text", "ours",
         "ref"),
        (f"box re-prompt ({_counts(rows['ours'], 'n_boxes')} vs "
         f"{_counts(rows['ref'], 'n_boxes')} boxes; decode + full-res masks)", "box_decode",
         "box_decode", "ours", "ref"),
        ("reference: second set_image for its SamPredictor", None, "reencode", "ours", "ref"),
        ("**end to end**", "total", "total", "ours", "ref"),
        ("end to end, reference reusing its embedding (no second set_image)", "total",
         "total_reusing_embedding", "ours", "ref"),
        ("**new phrase on an indexed image** (reference: full re-run)", "total", "total",
         "ours_new", "ref"),
        ("labeling with the 80 COCO class names (index + one query; reference: one proposal"
         " + CLIP pass, top boxes of every class re-prompted)", "total", "total", "ours_label",
         "ref_label"),
    ]
    lines = [
        "| stage (seconds per image) | ours: median (min–max) | reference: median (min–max) "
        "| ref / ours |",
        "|---|---|---|---:|",
    ]
    summary: dict[str, Any] = {}
    for label, ours_key, ref_key, ours_side, ref_side in stages:
        if not rows.get(ref_side):
            continue
        ref_s = summarize(_per_round_means(rows[ref_side], ref_key) if ref_key else [])
        if ours_key is None:
            ours_s = {"median": float("nan")}
            ours_txt = "—"
        else:
            ours_s = summarize(_per_round_means(rows[ours_side], ours_key))
            ours_txt = (f"{fmt_seconds(ours_s['median'])} ({fmt_seconds(ours_s['min'])}–"
                        f"{fmt_seconds(ours_s['max'])})")
        ratio = ref_s["median"] / ours_s["median"] if ours_s["median"] == ours_s["median"] \
            and ours_s["median"] > 0 else float("nan")
        ref_txt = (f"{fmt_seconds(ref_s['median'])} ({fmt_seconds(ref_s['min'])}–"
                   f"{fmt_seconds(ref_s['max'])})") if ref_key else "—"
        if ref_side == "hf":
            ref_txt += " (transformers)"
        ratio_txt = "—" if ratio != ratio else f"{ratio:.1f}×"
        if ours_side == "ours_label" and ours_s["median"] == ours_s["median"]:
            ours_txt += f" = {60 / ours_s['median']:.2f} images/min"
            ref_txt += f" = {60 / ref_s['median']:.2f} images/min"
        lines.append(f"| {label} | {ours_txt} | {ref_txt} | {ratio_txt} |")
        summary[f"{ours_side}:{ours_key}|{ref_side}:{ref_key}"] = {
            "ours": ours_s, "ref": ref_s, "ratio": ratio, "label": label}
    # counts per image
    count_lines = [
        "| image | size (W×H) | proposals: ours / AMG / transformers | regions scored: ours / ref "
        "| boxes re-prompted: ours / ref | new-phrase boxes (ours) |",
        "|---|---|---|---|---|---|",
    ]
    for i, (path, size) in enumerate(zip(result["images"], result["image_sizes"], strict=True)):
        def c(side: str, key: str, i: int = i) -> str:
            return _counts([r for r in rows.get(side, []) if r["image"] == i], key)

        count_lines.append(
            f"| {Path(path).parent.parent.name}/{Path(path).name} | {size[1]}×{size[0]} | "
            f"{c('ours', 'n_proposals')} / {c('ref', 'n_proposals')} / {c('hf', 'n_proposals')} "
            f"| {c('ours', 'n_scored')} / {c('ref', 'n_scored')} | {c('ours', 'n_boxes')} / "
            f"{c('ref', 'n_boxes')} | {c('ours_new', 'n_boxes')} |"
        )
    md = "\n".join(lines) + "\n\nCounts (every timed run):\n\n" + "\n".join(count_lines) + "\n"
    sizes = [r["index_mib_after_query"] for r in rows["ours"] if "index_mib_after_query" in r]
    if sizes:
        md += (f"\nIndex size per image (ours, in memory = saved file: image, embedding, "
               f"proposals, region embeddings, cached box decodes): {min(sizes):.1f}–"
               f"{max(sizes):.1f} MiB\n")
    mem = result.get("memory")
    if mem:
        o, r = mem["ours"], mem["ref"]
        mem_lines = [
            "",
            f"Peak memory, one end-to-end run on {Path(o['image']).name} in a fresh process "
            "per pipeline (VmHWM reset after loading the models):",
            "",
            "| | ours | reference | ref / ours |",
            "|---|---:|---:|---:|",
            f"| RSS after loading models (MiB) | {o['rss_after_load_mib']:.0f} | "
            f"{r['rss_after_load_mib']:.0f} | "
            f"{r['rss_after_load_mib'] / o['rss_after_load_mib']:.2f} |",
            f"| peak RSS during the run (MiB) | {o['peak_rss_mib']:.0f} | {r['peak_rss_mib']:.0f} "
            f"| {r['peak_rss_mib'] / o['peak_rss_mib']:.2f} |",
            f"| peak above post-load RSS (MiB) | {o['peak_above_load_mib']:.0f} | "
            f"{r['peak_above_load_mib']:.0f} | "
            f"{r['peak_above_load_mib'] / max(o['peak_above_load_mib'], 1e-9):.2f} |",
        ]
        if "cuda_peak_allocated_mib" in o:
            mem_lines.append(
                f"| CUDA peak allocated (MiB) | {o['cuda_peak_allocated_mib']:.0f} | "
                f"{r['cuda_peak_allocated_mib']:.0f} | "
                f"{r['cuda_peak_allocated_mib'] / o['cuda_peak_allocated_mib']:.2f} |"
            )
        md += "\n".join(mem_lines) + "\n"
        summary["memory"] = mem
    prof = result["timing"].get("profile")
    if prof:
        md += "\nProfile of the proposal stage (torch.profiler, first image, top ops by self " \
              "CPU time):\n"
        for side, table in prof.items():
            md += f"\n{side}:\n\n```\n{table}\n```\n"
    return md, summary


# ------------------------------------------------------------------------------ main


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Side-by-side speed of our engine vs. the usual SAM+CLIP pipeline.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--config", choices=sorted(CONFIGS), default="cpu")
    p.add_argument("--sam", default=None,
                   help="SAM id or save_pretrained folder (default: random full-size weights)")
    p.add_argument("--clip", default=None,
                   help="open_clip spec (default: random weights of the config's architecture)")
    p.add_argument("--dtype", default=None, help="our dtype (default: per config)")
    p.add_argument("--clip-arch", default=None,
                   help="open_clip architecture of the random CLIP (default: per config)")
    p.add_argument("--compile", action="store_true",
                   help="ours: torch.compile SAM's encoder and decoder (for --config cuda)")
    p.add_argument("--no-prefetch", action="store_true",
                   help="ours: decode box re-prompts in query instead of index")
    p.add_argument("--label", action="store_true",
                   help="also time labeling with the 80 COCO class names (ours vs reference)")
    p.add_argument("--image-paths", nargs="*", default=None, help="images (default: 3 from "
                   "../shared/data)")
    p.add_argument("--images", type=int, default=3, help="how many of the default images")
    p.add_argument("--repeats", type=int, default=3, help="timed rounds after the warm-up")
    p.add_argument("--new-phrases", type=int, default=3,
                   help="new-phrase queries per image per round (ours)")
    p.add_argument("--points-per-side", type=int, default=None)
    p.add_argument("--points-per-batch", type=int, default=64)
    p.add_argument("--pred-iou-thresh", type=float, default=None,
                   help="default: 0.0 with random weights, 0.88 with real SAM weights")
    p.add_argument("--stability-score-thresh", type=float, default=None,
                   help="default: 0.9 with random weights, 0.95 with real SAM weights")
    p.add_argument("--box-nms-thresh", type=float, default=None,
                   help="default: 1.0 (off) with random weights, 0.7 with real SAM weights")
    p.add_argument("--regions", type=int, default=100, help="regions scored by CLIP")
    p.add_argument("--boxes", type=int, default=10, help="boxes re-prompted")
    p.add_argument("--crop-style", default="masked", choices=["masked", "box", "blur"])
    p.add_argument("--no-hf", action="store_true", help="skip transformers' mask-generation")
    p.add_argument("--no-memory", action="store_true", help="skip the memory subprocesses")
    p.add_argument("--profile", action="store_true",
                   help="also profile the proposal stage of both sides (torch.profiler)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--out", default="benchmarks/results/speed_cpu",
                   help="output prefix (.json and .md are written)")
    p.add_argument("--workdir", default=None, help="where random weights are written (temp)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--spec", default=None, help=argparse.SUPPRESS)
    p.add_argument("--worker-image", default=None, help=argparse.SUPPRESS)
    return p


def _default_images(n: int) -> list[str]:
    paths = [SHARED_DATA / rel for rel in DEFAULT_IMAGES]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise SystemExit(f"default images not found ({missing}); pass --image-paths")
    if n < 1 or n > len(paths):
        raise SystemExit(f"--images must be in 1..{len(paths)}")
    return [str(p) for p in paths[:n]]


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s",
                        stream=sys.stderr)
    logging.getLogger("grounded_sam").setLevel(logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        spec = json.loads(Path(args.spec).read_text())
        side = args.worker.removeprefix("memory-")
        print(json.dumps(memory_worker(spec, side, args.worker_image)))
        return None

    cfg = CONFIGS[args.config]
    if cfg["device"] == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--config cuda needs a CUDA GPU")
    real_sam = args.sam is not None
    images = args.image_paths or _default_images(args.images)
    from grounded_sam import load_image

    sizes = [list(load_image(p).shape[:2]) for p in images]
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        sam = args.sam or str(save_random_sam(work / "sam", cfg["sam_arch"]))
        clip_arch = args.clip_arch or cfg["clip_arch"]
        clip = args.clip or save_random_clip(work / "clip", clip_arch)
        meta_ckpt = work / "meta_sam.pth"
        save_meta_checkpoint(sam, meta_ckpt)
        logger.info("models prepared in %.1fs", time.perf_counter() - t0)
        spec = {
            "device": cfg["device"],
            "dtype": args.dtype or cfg["dtype"],
            "sam": sam,
            "clip": clip,
            "meta_checkpoint": str(meta_ckpt),
            "points_per_side": args.points_per_side or cfg["points_per_side"],
            "points_per_batch": args.points_per_batch,
            "pred_iou_thresh": args.pred_iou_thresh if args.pred_iou_thresh is not None
            else (0.88 if real_sam else 0.0),
            "stability_score_thresh": args.stability_score_thresh
            if args.stability_score_thresh is not None else (0.95 if real_sam else 0.9),
            "box_nms_thresh": args.box_nms_thresh if args.box_nms_thresh is not None
            else (0.7 if real_sam else 1.0),
            "n_regions": args.regions,
            "n_boxes": args.boxes,
            "crop_style": args.crop_style,
            "prefetch_boxes": not args.no_prefetch,
            "compile": args.compile,
        }
        spec_path = work / "spec.json"
        spec_path.write_text(json.dumps(spec))
        result: dict[str, Any] = {
            "machine": machine_info(cfg["device"]),
            "config": {**spec, "config": args.config,
                       "sam_weights": "real: " + sam if real_sam else
                       f"random ({cfg['sam_arch']}, seed 0)",
                       "clip_weights": "real: " + clip if args.clip else
                       f"random ({clip_arch}, seed 0)",
                       "reference_dtype": "float32",
                       "repeats": args.repeats, "new_phrases_per_round": args.new_phrases},
            "images": images,
            "image_sizes": sizes,
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
        }
        t_start = time.perf_counter()
        if not args.no_memory:
            largest = max(range(len(images)), key=lambda i: sizes[i][0] * sizes[i][1])
            result["memory"] = {
                side: run_memory_subprocess(spec_path, side, images[largest])
                for side in ("ours", "ref")
            }
            logger.info("memory: %s", result["memory"])
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)

        def save_partial(timing: dict[str, Any]) -> None:
            partial = {**result, "timing": timing, "partial": True}
            with contextlib.suppress(Exception):
                md, _ = build_tables(partial)
                partial["markdown"] = md
                out.with_suffix(".partial.md").write_text(md)
            out.with_suffix(".partial.json").write_text(
                json.dumps(partial, indent=2, default=str))

        result["timing"] = timing_run(spec, images, args.repeats, args.new_phrases,
                                      hf=not args.no_hf, profile=args.profile,
                                      label=args.label, on_round=save_partial)
        result["wall_seconds"] = time.perf_counter() - t_start
        result["machine"]["loadavg_1m_end"] = round(os.getloadavg()[0], 2)
    md, summary = build_tables(result)
    result["summary"] = summary
    result["markdown"] = md
    out.with_suffix(".json").write_text(json.dumps(result, indent=2, default=str))
    for suffix in (".partial.json", ".partial.md"):
        out.with_suffix(suffix).unlink(missing_ok=True)
    out.with_suffix(".md").write_text(md)
    print(md)
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")
    return result


if __name__ == "__main__":
    main()
