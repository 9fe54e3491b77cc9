"""``grounded-sam everything``: SAM's automatic masks for a whole image."""

from __future__ import annotations

import argparse
import logging
import time

from grounded_sam.cli.common import (
    HelpFormatter,
    add_model_options,
    check_images_exist,
    check_out_dir,
    load_engine,
    non_negative_int,
    positive_int,
    probability,
    say,
    stage_progress,
)

__all__ = ["add_parser", "run"]

logger = logging.getLogger(__name__)

DESCRIPTION = """\
SAM's "segment everything" mode: a grid of point prompts, each decoded to masks, filtered
by predicted IoU, stability and non-maximum suppression. Writes into --out:
  STEM_everything.png     all masks drawn on the image
  STEM_everything.json    per mask: segmentation (COCO RLE), area, bbox (xywh),
                          predicted_iou, stability_score, point_coords, crop_box (xywh)
"""

EXAMPLE = """\
example:
  grounded-sam everything street.jpg --out results/ --points-per-side 32 --crop-n-layers 1
"""


def add_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``everything`` command."""
    from types import SimpleNamespace

    from grounded_sam.cli.defaults import EVERYTHING

    s = SimpleNamespace(**EVERYTHING)
    parser = commands.add_parser(
        "everything",
        help="SAM's automatic masks for a whole image (no text)",
        description=DESCRIPTION,
        epilog=EXAMPLE,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("image", metavar="IMAGE", help="image file")
    parser.add_argument(
        "-o", "--out", metavar="DIR", required=True, default=argparse.SUPPRESS, help="output folder"
    )
    parser.add_argument(
        "--opacity", type=probability, default=0.5, help="mask fill opacity of the overlay"
    )
    group = parser.add_argument_group("automatic mask generation")
    group.add_argument(
        "--points-per-side",
        type=positive_int,
        default=s.points_per_side,
        help="grid of point prompts along each image side",
    )
    group.add_argument(
        "--points-per-batch",
        type=positive_int,
        default=s.points_per_batch,
        help="point prompts decoded per SAM decoder call (memory vs speed)",
    )
    group.add_argument(
        "--pred-iou-thresh",
        type=probability,
        default=s.pred_iou_thresh,
        help="keep masks whose predicted IoU is above this",
    )
    group.add_argument(
        "--stability-score-thresh",
        type=probability,
        default=s.stability_score_thresh,
        help="keep masks whose stability score is at least this",
    )
    group.add_argument(
        "--box-nms-thresh",
        type=probability,
        default=s.box_nms_thresh,
        help="box IoU above which duplicate masks are removed",
    )
    group.add_argument(
        "--crop-n-layers",
        type=non_negative_int,
        default=s.crop_n_layers,
        help="extra layers of overlapping zoomed-in crops (finds small objects; slower)",
    )
    group.add_argument(
        "--crop-n-points-downscale-factor",
        type=positive_int,
        default=s.crop_n_points_downscale_factor,
        help="points per side are divided by this for each crop layer",
    )
    group.add_argument(
        "--min-mask-region-area",
        type=non_negative_int,
        default=s.min_mask_region_area,
        help="remove islands and holes smaller than this many pixels (0: off)",
    )
    add_model_options(parser)
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run ``everything``; returns the exit status."""
    from grounded_sam import load_image
    from grounded_sam.export.annotate import annotate_detections
    from grounded_sam.export.files import atomic_write_json, atomic_write_png
    from grounded_sam.export.records import everything_records, jsonable

    out = check_out_dir(args.out)
    (path,) = check_images_exist([args.image])
    image = load_image(path)  # fail on an unreadable image before loading models
    settings = {
        "points_per_side": args.points_per_side,
        "points_per_batch": args.points_per_batch,
        "pred_iou_thresh": args.pred_iou_thresh,
        "stability_score_thresh": args.stability_score_thresh,
        "box_nms_thresh": args.box_nms_thresh,
        "crop_n_layers": args.crop_n_layers,
        "crop_n_points_downscale_factor": args.crop_n_points_downscale_factor,
        "min_mask_region_area": args.min_mask_region_area,
    }
    gs = load_engine(args)
    t0 = time.perf_counter()
    progress = stage_progress(args)
    dets = gs.everything(image, show_progress=progress, **settings)
    records = everything_records(dets, output_mode="coco_rle")
    elapsed = time.perf_counter() - t0
    say(args, f"{path}: {progress.summary()} (total {elapsed:.2f}s)")
    h, w = image.shape[:2]
    out.mkdir(parents=True, exist_ok=True)
    overlay = atomic_write_png(
        out / f"{path.stem}_everything.png",
        annotate_detections(image, dets, args.opacity, draw_labels=False),
    )
    doc = {
        "image": str(path),
        "width": w,
        "height": h,
        "models": {"sam": gs.model_ids[0]},
        "settings": settings,
        "num_masks": len(records),
        "masks": jsonable(records),
    }
    result = atomic_write_json(out / f"{path.stem}_everything.json", doc, indent=1)
    print(f"{path}: {len(records)} mask(s) in {elapsed:.2f}s")
    if records:
        areas = sorted(r["area"] for r in records)
        print(f"  areas {areas[0]} .. {areas[-1]} px (median {areas[len(areas) // 2]})")
    print(f"  wrote {overlay} and {result}")
    return 0
