"""``grounded-sam label``: open-vocabulary labeling of a folder into a COCO/YOLO/VOC dataset."""

from __future__ import annotations

import argparse
import logging
import sys
import time

from tqdm import tqdm

from grounded_sam.cli.common import (
    HelpFormatter,
    add_grounding_options,
    add_model_options,
    add_proposal_options,
    add_query_options,
    load_engine,
    proposal_settings,
    query_kwargs,
)

__all__ = ["add_parser", "run"]

logger = logging.getLogger(__name__)

DESCRIPTION = """\
Label every image under IMAGES_DIR (recursively; .jpg .jpeg .png .bmp .webp, any case)
with the given classes and export a dataset into --out. Each image is indexed once and all
classes are answered from that one index.

Resumable: each image's result is saved (atomically) in OUT/.grounded_sam_state as soon as
it is done. Run the same command again after an interruption (Ctrl-C, a killed process) and
it continues where it stopped; the dataset is the same as that of an uninterrupted run.
Running it again with another --format re-exports the saved results (models are loaded
only if some image still needs labeling).

An image that cannot be read is reported by name with the reason and skipped; the others
are labeled and exported, and the exit status is 1.

Dataset layout in OUT:
  images/                  the labeled images (nested folders flattened with "__")
  coco:  annotations.json  RLE masks; each annotation has "score" (the confidence)
  yolo:  labels/*.txt + data.yaml (segmentation polygons); scores/*.txt holds the
         confidence of each label line, in the same order (sidecar)
  voc:   annotations/*.xml
"""

EXAMPLE = """\
example:
  grounded-sam label fruits/images --classes "date, fig, hazelnut" --format coco --out fruits-coco
"""


def add_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``label`` command."""
    from grounded_sam.export.dataset import FORMATS

    parser = commands.add_parser(
        "label",
        help="label a folder of images with class names and export a dataset",
        description=DESCRIPTION,
        epilog=EXAMPLE,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("images_dir", metavar="IMAGES_DIR", help="folder of images")
    parser.add_argument(
        "-c",
        "--classes",
        required=True,
        default=argparse.SUPPRESS,
        help="comma-separated class names, e.g. 'date, fig, hazelnut'",
    )
    parser.add_argument(
        "-f", "--format", default="coco", choices=FORMATS, help="dataset format to export"
    )
    parser.add_argument(
        "-o",
        "--out",
        metavar="DATASET_DIR",
        required=True,
        default=argparse.SUPPRESS,
        help="output dataset folder",
    )
    parser.add_argument(
        "--restart",
        action="store_true",
        help="discard the progress saved in DATASET_DIR and label every image again",
    )
    parser.add_argument("--no-progress", action="store_true", help="do not show the progress bar")
    add_query_options(parser)
    add_grounding_options(parser)
    add_proposal_options(parser)
    add_model_options(parser)
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run ``label``; returns 0, or 1 when some images failed."""
    from grounded_sam import parse_prompt
    from grounded_sam.export.dataset import label_images, labeling_config, prepare_labeling

    try:
        classes = parse_prompt(args.classes)
    except ValueError:
        raise ValueError(
            "The class list (--classes) is empty: give comma-separated class names, e.g. "
            "--classes 'date, fig, hazelnut'."
        ) from None
    images = prepare_labeling(args.images_dir, args.out)
    config = labeling_config(
        classes,
        sam=args.sam,
        clip=args.clip,
        proposal_settings=proposal_settings(args),
        crop_style=args.crop_style,
        max_regions=args.max_regions,
        threshold=args.threshold,
        top_k=args.top_k or None,
        refine=args.refine,
        min_region_area=args.min_region_area,
        negative=args.negative,
        calibration=args.calibration,
        keep_parts=args.keep_parts,
    )

    def on_failure(rel: str, reason: str) -> None:
        tqdm.write(f"grounded-sam: failed: {rel}: {reason}", file=sys.stderr)

    t0 = time.perf_counter()
    report = label_images(
        lambda: load_engine(args),  # loaded only if some image still needs labeling
        args.images_dir,
        images,
        classes,
        args.out,
        args.format,
        config=config,
        restart=args.restart,
        progress=not args.no_progress,
        on_failure=on_failure,
        **query_kwargs(args),
    )
    elapsed = time.perf_counter() - t0
    done = report.reused + report.labeled
    print(
        f"{done} of {report.total} image(s) labeled in {elapsed:.1f}s "
        f"({report.labeled} now, {report.reused} from an earlier run), "
        f"{len(report.failed)} failed"
    )
    width = max(5, *(len(c) for c in classes))
    print(f"  {'class':<{width}}  instances")
    for name in classes:
        print(f"  {name:<{width}}  {report.instances.get(name, 0):>9}")
    print(f"  {args.format} dataset: {', '.join(str(p) for p in report.exported)}")
    if report.failed:
        names = ", ".join(rel for rel, _ in report.failed)
        sys.stderr.write(
            f"grounded-sam: error: {len(report.failed)} image(s) failed and were left out: "
            f"{names}\n"
        )
        return 1
    return 0
