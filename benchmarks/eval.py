"""Quality harness: text-prompted instance segmentation on a COCO-format dataset.

For every image the engine is prompted with category names (the classes present in the image,
or every class of the dataset with ``--all-classes``) and its detections are scored against
the ground truth:

* COCO mask AP and AP50 (``pycocotools`` ``COCOeval`` with ``iouType="segm"``), using the
  detections' ``confidence`` as scores;
* mIoU: the IoU of the best-matching predicted mask *of the same class* for every
  (non-crowd) ground-truth instance, averaged (0 when the class got no mask);
* recall@0.5: the fraction of ground-truth instances whose best same-class IoU is >= 0.5;
* proposal mIoU: the same, over SAM's class-agnostic proposals (an upper bound on what CLIP
  scoring can pick from; tells proposal failures from classification failures);
* images/s: index + query time per image (model loading and evaluation excluded).

A dataset is a folder holding ``instances.json`` and ``images/`` (the layout of
``../shared/data/*``), or any ``--ann FILE --images DIR`` pair (e.g. COCO val2017).

Examples::

    # real weights (downloaded once into the Hugging Face cache)
    python benchmarks/eval.py --data ../shared/data/coco-val-mini \\
        --sam facebook/sam-vit-base --clip ViT-B-16:laion2b_s34b_b88k --out results/eval.json
    # mechanics only, tiny random models (numbers are meaningless; thresholds lowered so
    # that random masks survive)
    python benchmarks/eval.py --data ../shared/data/fruits --tiny --max-images 2 \
        --pred-iou-thresh 0 --stability-score-thresh 0.5

Numbers obtained with random weights (``--tiny`` or ``--random-*``) are meaningless; they
only show that the harness runs.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine_info  # noqa: E402

logger = logging.getLogger("benchmarks.eval")

METRIC_KEYS = ("mask_AP", "mask_AP50", "mask_AP75", "mIoU", "recall@0.5", "proposal_mIoU")


@dataclass
class Dataset:
    """A COCO-format dataset on disk."""

    name: str
    ann_file: Path
    image_dir: Path


@dataclass
class EvalResult:
    """Metrics and bookkeeping for one dataset."""

    dataset: str
    n_images: int = 0
    n_gt: int = 0
    n_detections: int = 0
    prompts_per_image: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    images_per_s: float = 0.0
    per_image: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "n_images": self.n_images,
            "n_gt_instances": self.n_gt,
            "n_detections": self.n_detections,
            "prompts_per_image": self.prompts_per_image,
            "metrics": self.metrics,
            "seconds": self.seconds,
            "images_per_s": self.images_per_s,
            "per_image": self.per_image,
        }


def find_datasets(args: argparse.Namespace) -> list[Dataset]:
    """Datasets named on the command line."""
    out: list[Dataset] = []
    for folder in args.data or []:
        path = Path(folder).expanduser()
        ann = path / "instances.json"
        if not ann.is_file():
            raise FileNotFoundError(f"{path} has no instances.json (COCO instances format).")
        images = path / "images"
        if not images.is_dir():
            raise FileNotFoundError(f"{path} has no images/ folder.")
        out.append(Dataset(path.name, ann, images))
    if args.ann or args.images:
        if not (args.ann and args.images):
            raise ValueError("--ann and --images go together.")
        ann, images = Path(args.ann).expanduser(), Path(args.images).expanduser()
        if not ann.is_file():
            raise FileNotFoundError(f"annotation file not found: {ann}")
        if not images.is_dir():
            raise FileNotFoundError(f"image folder not found: {images}")
        out.append(Dataset(args.name or ann.stem, ann, images))
    if not out:
        raise ValueError("Give at least one dataset: --data DIR ... or --ann FILE --images DIR.")
    return out


def build_engine(args: argparse.Namespace, workdir: Path):
    """Load GroundedSAM with the requested (or tiny random) models."""
    from grounded_sam import EverythingSettings, GroundedSAM

    sam, clip = args.sam, args.clip
    if args.tiny:
        from grounded_sam.testing import save_tiny_models

        sam, clip = save_tiny_models(workdir / "tiny")
    settings = EverythingSettings(
        points_per_side=args.points_per_side,
        points_per_batch=args.points_per_batch,
        pred_iou_thresh=args.pred_iou_thresh,
        stability_score_thresh=args.stability_score_thresh,
        box_nms_thresh=args.box_nms_thresh,
    )
    gs = GroundedSAM.from_pretrained(
        sam=sam,
        clip=clip,
        device=args.device,
        dtype=args.dtype,
        crop_style=args.crop_style,
        proposal_settings=settings,
        max_regions=args.max_regions,
        threshold=args.threshold,
        top_k=args.top_k or None,
        refine=args.refine,
    )
    return gs, (str(sam), None if gs.grounds_text else str(clip))  # SAM 3: no CLIP loaded


def _best_iou(dt_rles: list, gt_rles: list) -> np.ndarray:
    """(G,) best IoU of each ground-truth RLE against any of the predictions (0 if none)."""
    from pycocotools import mask as mask_utils

    if not gt_rles:
        return np.zeros(0)
    if not dt_rles:
        return np.zeros(len(gt_rles))
    ious = np.asarray(mask_utils.iou(dt_rles, gt_rles, [0] * len(gt_rles)))
    return ious.reshape(len(dt_rles), len(gt_rles)).max(axis=0)


def evaluate_dataset(gs, dataset: Dataset, args: argparse.Namespace) -> EvalResult:
    """Run the engine over a dataset and compute the metrics."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from grounded_sam import load_image
    from grounded_sam.utils.masks import encode_rle

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(dataset.ann_file))
    cats = coco.loadCats(coco.getCatIds())
    cat_by_name = {c["name"].strip().lower(): c["id"] for c in cats}
    all_names = [c["name"] for c in cats]
    img_ids = sorted(coco.getImgIds())
    if args.max_images:
        img_ids = img_ids[: args.max_images]
    result = EvalResult(dataset=dataset.name)
    detections: list[dict[str, Any]] = []
    best_cls: list[float] = []
    best_prop: list[float] = []
    n_prompts = 0
    for image_id in img_ids:
        info = coco.loadImgs(image_id)[0]
        anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id))
        if args.all_classes:
            names = all_names
        else:
            present = sorted({a["category_id"] for a in anns})
            names = [coco.loadCats(c)[0]["name"] for c in present]
        if not names:
            continue
        image = load_image(dataset.image_dir / info["file_name"])
        t0 = time.perf_counter()
        index = gs.index(image)
        dets = gs.query(index, names)
        elapsed = time.perf_counter() - t0
        result.seconds += elapsed
        n_prompts += len(names)
        dt_by_cat: dict[int, list] = {}
        rles = encode_rle(dets.mask) if len(dets) else []
        for k in range(len(dets)):
            cat_id = cat_by_name[str(dets.data["class_name"][k]).strip().lower()]
            rle = rles[k]
            dt_by_cat.setdefault(cat_id, []).append(rle)
            detections.append(
                {
                    "image_id": image_id,
                    "category_id": cat_id,
                    "segmentation": rle,
                    "score": float(dets.confidence[k]),
                }
            )
        # Per-instance best IoU (same class) and the class-agnostic proposal upper bound.
        gts = [a for a in anns if not a.get("iscrowd", 0)]
        proposal_rles = encode_rle(index.proposals.full_masks()) if len(index) else []
        for ann in gts:
            gt_rle = coco.annToRLE(ann)
            best_cls.append(float(_best_iou(dt_by_cat.get(ann["category_id"], []), [gt_rle])[0]))
            best_prop.append(float(_best_iou(proposal_rles, [gt_rle])[0]))
        result.per_image.append(
            {
                "image_id": image_id,
                "file_name": info["file_name"],
                "size": [int(info["height"]), int(info["width"])],
                "prompts": len(names),
                "proposals": len(index),
                "detections": len(dets),
                "gt_instances": len(gts),
                "seconds": elapsed,
            }
        )
        result.n_images += 1
        result.n_gt += len(gts)
        logger.info(
            "%s %s: %d prompts, %d proposals, %d detections, %.2fs",
            dataset.name, info["file_name"], len(names), len(index), len(dets), elapsed,
        )
    result.n_detections = len(detections)
    result.prompts_per_image = n_prompts / max(result.n_images, 1)
    result.images_per_s = result.n_images / result.seconds if result.seconds else float("nan")
    ap = ap50 = ap75 = 0.0
    evaluated = [p["image_id"] for p in result.per_image]
    if detections and evaluated:
        with contextlib.redirect_stdout(io.StringIO()):
            coco_dt = coco.loadRes(detections)
            ev = COCOeval(coco, coco_dt, iouType="segm")
            ev.params.imgIds = evaluated
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        # COCOeval reports -1 where no ground truth exists; treat as 0 for a single number.
        ap, ap50, ap75 = (max(float(ev.stats[i]), 0.0) for i in range(3))
    result.metrics = {
        "mask_AP": ap,
        "mask_AP50": ap50,
        "mask_AP75": ap75,
        "mIoU": float(np.mean(best_cls)) if best_cls else float("nan"),
        "recall@0.5": float(np.mean(np.asarray(best_cls) >= 0.5)) if best_cls else float("nan"),
        "proposal_mIoU": float(np.mean(best_prop)) if best_prop else float("nan"),
    }
    return result


def markdown_table(results: list[EvalResult]) -> str:
    """The results as a markdown table (metrics in percent)."""
    lines = [
        "| dataset | images | GT instances | prompts/image | detections | mask AP | AP50 | "
        "mIoU | recall@0.5 | proposal mIoU | images/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        m = r.metrics
        pct = [f"{100 * m[k]:.1f}" for k in ("mask_AP", "mask_AP50", "mIoU", "recall@0.5",
                                              "proposal_mIoU")]
        lines.append(
            f"| {r.dataset} | {r.n_images} | {r.n_gt} | {r.prompts_per_image:.1f} | "
            f"{r.n_detections} | {' | '.join(pct)} | {r.images_per_s:.3f} |"
        )
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    """Command-line arguments."""
    p = argparse.ArgumentParser(
        description="COCO-format mask AP / mIoU of text-prompted segmentation.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--data", nargs="+", help="dataset folders with instances.json + images/")
    p.add_argument("--ann", help="a COCO instances JSON (with --images)")
    p.add_argument("--images", help="the image folder of --ann")
    p.add_argument("--name", help="display name of the --ann dataset")
    p.add_argument("--sam", default="facebook/sam-vit-base", help="SAM id or local folder")
    p.add_argument("--clip", default="ViT-B-16:laion2b_s34b_b88k", help="open_clip spec")
    p.add_argument("--tiny", action="store_true",
                   help="use tiny random models (tests/demos; numbers are meaningless)")
    p.add_argument("--device", default=None, help="cpu / cuda (default: CUDA when present)")
    p.add_argument("--dtype", default=None, help="float32 / bfloat16 / float16")
    p.add_argument("--crop-style", default="masked", choices=["masked", "box", "blur"])
    p.add_argument("--all-classes", action="store_true",
                   help="prompt every image with every class of the dataset")
    p.add_argument("--max-images", type=int, default=0, help="first N images only (0 = all)")
    p.add_argument("--points-per-side", type=int, default=16)
    p.add_argument("--points-per-batch", type=int, default=64)
    p.add_argument("--pred-iou-thresh", type=float, default=0.88)
    p.add_argument("--stability-score-thresh", type=float, default=0.95)
    p.add_argument("--box-nms-thresh", type=float, default=0.7)
    p.add_argument("--max-regions", type=int, default=100)
    p.add_argument("--threshold", type=float, default=0.0,
                   help="detection threshold (low, so that AP sees the whole ranking)")
    p.add_argument("--top-k", type=int, default=0, help="max detections per phrase (0 = no limit)")
    p.add_argument("--refine", type=int, default=1)
    p.add_argument("--out", default=None,
                   help="JSON report path (default: none written, only the table is printed)")
    p.add_argument("--markdown", default=None,
                   help="markdown table output path (default: --out with .md)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the harness; returns the JSON report (also written to ``--out`` when given)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s: %(message)s",
    )
    if args.max_images < 0:
        raise SystemExit("--max-images must be >= 0")
    datasets = find_datasets(args)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        gs, (sam_id, clip_id) = build_engine(args, Path(tmp))
        load_s = time.perf_counter() - t0
        results = [evaluate_dataset(gs, ds, args) for ds in datasets]
    device = str(gs.device)
    report = {
        "machine": machine_info(device),
        "config": {
            "sam": "tiny-random" if args.tiny else sam_id,
            "clip": "tiny-random" if args.tiny else clip_id,
            "device": device,
            "dtype": str(gs.predictor.dtype).replace("torch.", ""),
            "crop_style": args.crop_style,
            "prompting": "all dataset classes" if args.all_classes else "classes present",
            "points_per_side": args.points_per_side,
            "pred_iou_thresh": args.pred_iou_thresh,
            "stability_score_thresh": args.stability_score_thresh,
            "box_nms_thresh": args.box_nms_thresh,
            "max_regions": args.max_regions,
            "threshold": args.threshold,
            "top_k": args.top_k or None,
            "refine": args.refine,
            "max_images": args.max_images or None,
            "model_load_s": load_s,
        },
        "random_weights_warning": bool(args.tiny),
        "results": [r.to_json() for r in results],
        "markdown": markdown_table(results),
    }
    print(report["markdown"])
    written = []
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2))
        written.append(out)
    if args.markdown or args.out:
        md_path = Path(args.markdown) if args.markdown else Path(args.out).with_suffix(".md")
        md_path.parent.mkdir(parents=True, exist_ok=True)
        md_path.write_text(report["markdown"])
        written.append(md_path)
    if written:
        print(f"wrote {' and '.join(map(str, written))}")
    else:
        print("(pass --out FILE.json to keep the full report)")
    return report


if __name__ == "__main__":
    main()
