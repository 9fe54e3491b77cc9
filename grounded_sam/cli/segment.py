"""``grounded-sam segment``: phrases in, an overlay, per-instance masks and JSON out."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from grounded_sam.cli.common import (
    HelpFormatter,
    add_model_options,
    add_proposal_options,
    check_images_exist,
    check_out_dir,
    format_table,
    load_engine,
    say,
    stage_progress,
    unique_stems,
)
from grounded_sam.cli.options import add_query_options, query_options

if TYPE_CHECKING:
    import numpy as np
    import supervision as sv

__all__ = ["add_parser", "run"]

logger = logging.getLogger(__name__)

DESCRIPTION = """\
Segment the objects a text prompt names. For each IMAGE, writes into --out:
  STEM_overlay.png        masks, boxes and "label confidence" drawn on the image
  STEM_masks/STEM_NNN_LABEL.png   one binary PNG (0/255) per instance
  STEM.json               per instance: label, confidence, clip_score, sam_iou,
                          box (xyxy pixels), area, mask (COCO RLE)
and prints a table per image. With --json the JSON goes to stdout instead of the table
(one JSON document per image, one per line); files are then written only if --out is given.

confidence is the calibrated CLIP probability that the region shows the label.
"""

EXAMPLE = """\
example:
  grounded-sam segment street.jpg park.jpg --prompt "dog, frisbee" --out results/
  grounded-sam segment kitchen.jpg --prompt cup --negative "handle, saucer" --out results/
  grounded-sam segment shelf.jpg --exemplar 40,60,120,150 --exemplar-label jar --out results/
"""


def add_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``segment`` command."""
    parser = commands.add_parser(
        "segment",
        help="segment the objects a text prompt names in one or more images",
        description=DESCRIPTION,
        epilog=EXAMPLE,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image file(s)")
    parser.add_argument(
        "-p",
        "--prompt",
        default=None,
        help="phrase or comma-separated phrases, e.g. 'dog, frisbee' (required unless "
        "--exemplar is given)",
    )
    parser.add_argument(
        "-o", "--out", metavar="DIR", default=None, help="output folder (required unless --json)"
    )
    parser.add_argument(
        "--json", action="store_true", help="print the JSON result to stdout instead of tables"
    )
    parser.add_argument(
        "--opacity", type=float, default=0.5, help="mask fill opacity of the overlay, 0 to 1"
    )
    add_query_options(parser, per_image=True)
    add_proposal_options(parser)
    add_model_options(parser)
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run ``segment``; returns the exit status (1 if any image failed)."""
    from grounded_sam import parse_prompt
    from grounded_sam.batch import segment_items
    from grounded_sam.export.records import detections_to_json

    options = query_options(args)
    if args.prompt is None and options.exemplars is None:
        raise ValueError(
            "Give --prompt PHRASES, --exemplar X1,Y1,X2,Y2 around an example object, or both."
        )
    phrases = None if args.prompt is None else parse_prompt(args.prompt)
    labels = (phrases or []) + ([options.exemplar_label] if options.exemplars else [])
    options.negatives_for(phrases or [])
    if args.out is None and not args.json:
        raise ValueError("Give --out DIR for the result files, or --json to print the JSON.")
    if not 0.0 <= args.opacity <= 1.0:
        raise ValueError(f"--opacity must be in [0, 1], got {args.opacity}.")
    out = check_out_dir(args.out)
    images = check_images_exist(args.images)
    models = {"sam": args.sam, "clip": args.clip}
    gs = load_engine(args)
    if gs.grounds_text:
        models["clip"] = None  # SAM 3 grounds text itself: --clip was not loaded
    failed = 0
    stems = dict(zip(images, unique_stems(images), strict=True))
    t0 = time.perf_counter()
    stages = []  # each image's indexing stages (bars on stderr, times for the summary)

    def new_stages():  # called once per image by the loop, before that image is indexed
        stages.append(stage_progress(args))
        return stages[-1]

    items = segment_items(
        gs,
        images,
        phrases,
        show_progress=not args.quiet,
        stages=new_stages,
        options=options,
    )  # a progress bar over the images, one per indexing stage, on stderr (-q: none)
    for item in items:  # the shared many-images loop (decoding overlapped with model work)
        path, image, dets = item.source, item.image, item.result
        elapsed, t0 = time.perf_counter() - t0, time.perf_counter()
        if not item.ok:
            if not isinstance(dets, (ValueError, OSError)):
                raise dets
            from tqdm import tqdm  # writes past the images bar, on a line of its own

            tqdm.write(f"grounded-sam: error: {' '.join(str(dets).split())}", file=sys.stderr)
            failed += 1
            continue
        indexed = f"{stages[-1].summary()}, " if stages else ""
        say(args, f"{path}: {indexed}segmented in {elapsed:.2f}s")
        doc = detections_to_json(
            dets,
            image.shape[:2],
            image_path=path,
            prompt=args.prompt,
            phrases=labels,
            models=models,
        )
        if out is not None:
            written = _write_outputs(out, stems[path], image, dets, doc, args.opacity)
        if args.json:
            sys.stdout.write(json.dumps(doc, allow_nan=False) + "\n")
        else:
            print(f"{path}: {len(dets)} instance(s) in {elapsed:.2f}s")
            print(format_table(dets))
            if out is not None:
                print(f"  wrote {written[0]}, {written[1]} and {len(written) - 2} mask file(s)")
        sys.stdout.flush()
    return 1 if failed else 0


def _write_outputs(
    out: Path, stem: str, image: np.ndarray, dets: sv.Detections, doc: dict, opacity: float
) -> list[Path]:
    """Overlay, JSON and per-instance masks (stale masks of an earlier run removed)."""
    from grounded_sam.export.annotate import annotate_detections
    from grounded_sam.export.files import atomic_write_json, atomic_write_png
    from grounded_sam.export.records import save_instance_masks

    out.mkdir(parents=True, exist_ok=True)
    overlay = atomic_write_png(
        out / f"{stem}_overlay.png", annotate_detections(image, dets, opacity)
    )
    result = atomic_write_json(out / f"{stem}.json", doc, indent=1)
    mask_dir = out / f"{stem}_masks"
    if mask_dir.is_dir():
        for old in mask_dir.glob(f"{stem}_[0-9][0-9][0-9]_*.png"):
            old.unlink()
    masks = save_instance_masks(dets, mask_dir, stem)
    return [overlay, result, *masks]
