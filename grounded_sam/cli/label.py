"""``grounded-sam label``: open-vocabulary labeling of a folder into a COCO/YOLO/VOC dataset."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from grounded_sam.cli.common import (
    HelpFormatter,
    add_model_options,
    add_proposal_options,
    load_engine,
    positive_int,
    proposal_settings,
)
from grounded_sam.cli.label_video import DESCRIPTION as VIDEO_DESCRIPTION
from grounded_sam.cli.label_video import (
    add_video_options,
    job_config,
    print_classes_and_failures,
    print_failure,
)
from grounded_sam.cli.options import add_query_options, query_options

if TYPE_CHECKING:
    from grounded_sam.grounding.options import QueryOptions
    from grounded_sam.labeling import LabelReport

__all__ = ["add_parser", "run"]

logger = logging.getLogger(__name__)

DESCRIPTION = """\
Label every image under IMAGES_DIR (recursively; .jpg .jpeg .png .bmp .webp .tif .tiff, any
case) with the given classes and export a dataset into --out. Each image is indexed once and all
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

%s"""

EXAMPLE = """\
examples:
  grounded-sam label fruits/images --classes "date, fig, hazelnut" --format coco --out fruits-coco

  # the same dataset, labeled by Ray Data actors (local Ray; 'auto' joins a cluster)
  grounded-sam label fruits/images -c "date, fig, hazelnut" -o fruits-coco --ray
  ray job submit -- grounded-sam label s3://bucket/images -c "car, person" \\
      -o /shared/cars-coco --ray auto --gpus-per-worker 1
"""


def add_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``label`` command."""
    from grounded_sam.cli.defaults import DATASET_FORMATS as FORMATS
    from grounded_sam.cli.defaults import VIDEO_DATASET_FORMATS as VIDEO_FORMATS

    parser = commands.add_parser(
        "label",
        help="label a folder of images with class names and export a dataset",
        description=DESCRIPTION % VIDEO_DESCRIPTION,
        epilog=EXAMPLE,
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "images_dir",
        metavar="IMAGES_DIR",
        help="folder of images, or of videos, or one video file; with --ray also a text file "
        "of image paths/URIs, or a URI such as s3://bucket/images",
    )
    parser.add_argument(
        "-c",
        "--classes",
        required=True,
        default=argparse.SUPPRESS,
        help="comma-separated class names, e.g. 'date, fig, hazelnut'",
    )
    parser.add_argument(
        "-f",
        "--format",
        default="coco",
        choices=(*FORMATS, *(f for f in VIDEO_FORMATS if f not in FORMATS)),
        help="dataset format to export (videos: coco = COCO-video, or mot)",
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
    add_proposal_options(parser)
    add_model_options(parser)
    add_video_options(parser)
    _add_ray_options(parser)
    parser.set_defaults(run=run)
    return parser


def _concurrency(text: str) -> int | tuple[int, int]:
    """N (a fixed pool of actors) or MIN-MAX (an autoscaling range)."""
    lo, sep, hi = text.partition("-")
    try:
        values = (int(lo), int(hi)) if sep else (int(lo),)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or MIN-MAX, got {text!r}") from None
    if min(values) < 1 or (sep and values[0] > values[1]):
        raise argparse.ArgumentTypeError(f"expected N >= 1 or 1 <= MIN <= MAX, got {text}")
    return values if sep else values[0]  # type: ignore[return-value]


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text}")
    return value


def _add_ray_options(parser: argparse.ArgumentParser) -> None:
    """--ray [ADDRESS], --concurrency, --batch-size, --gpus-per-worker, --cpus-per-worker."""
    group = parser.add_argument_group(
        "Ray cluster (pip install -e '.[ray]' from a clone)",
        "Label with Ray Data actors (models loaded once per actor); results are saved as "
        "Parquet shards in DATASET_DIR/.grounded_sam_state/shards and exported into the same "
        "dataset as without --ray. On several nodes DATASET_DIR must be a shared folder.",
    )
    group.add_argument(
        "--ray",
        nargs="?",
        const="local",
        default=None,
        metavar="ADDRESS",
        help="run on Ray: no ADDRESS starts a local Ray, 'auto' joins this node's cluster, "
        "'ray://HOST:10001' connects a Ray client (put --ray after IMAGES_DIR)",
    )
    group.add_argument(
        "--concurrency",
        type=_concurrency,
        default=None,
        metavar="N|MIN-MAX",
        help="actors: a fixed number or an autoscaling range (default: 1 to the cluster's "
        "GPUs / --gpus-per-worker, or its CPUs - 1 / --cpus-per-worker)",
    )
    group.add_argument(
        "--batch-size",
        type=positive_int,
        default=16,
        help="images per actor call and per result shard",
    )
    group.add_argument(
        "--gpus-per-worker",
        type=_non_negative_float,
        default=0.0,
        help="GPUs per actor (0 on CPU clusters; 0.5 puts two actors on one GPU)",
    )
    group.add_argument(
        "--cpus-per-worker",
        type=_non_negative_float,
        default=1.0,
        help="CPUs per actor",
    )


def run(args: argparse.Namespace) -> int:
    """Run ``label``; returns 0, or 1 when some images failed."""
    from grounded_sam import parse_prompt
    from grounded_sam.labeling import label_images, prepare_labeling

    # parse_prompt's own message says what is wrong (empty, too many, a control character,
    # too long) and names the flag
    classes = parse_prompt(args.classes, what="class list (--classes)")
    options = query_options(args)  # validated once, here, before anything loads
    videos = _videos(args)
    if videos is not None:
        from grounded_sam.cli.label_video import run_videos

        return run_videos(args, classes, options, *videos)
    if args.ray is not None:
        return _run_ray(args, classes, options)
    if "://" in args.images_dir:
        raise ValueError(
            f"{args.images_dir} is a URI: URIs and text files of image paths are labeled with "
            "--ray (pip install -e '.[ray]' from a clone); without it, give a local folder."
        )
    images = prepare_labeling(args.images_dir, args.out)
    config = job_config(args, classes, options)
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
        progress=not (args.no_progress or args.quiet),
        on_failure=print_failure,
        options=options,
    )
    elapsed = time.perf_counter() - t0
    return _summary(args, classes, report, elapsed)


def _videos(args: argparse.Namespace) -> tuple[Path, list[Path]] | None:
    """The videos of the job (None: a job of images); ``--format mot`` needs videos."""
    from grounded_sam.cli.defaults import DATASET_FORMATS
    from grounded_sam.labeling.video import prepare_video_labeling

    found = None if "://" in args.images_dir else prepare_video_labeling(args.images_dir, args.out)
    if found is None and args.format not in DATASET_FORMATS:
        raise ValueError(
            f"--format {args.format} is a video format and {args.images_dir} holds no videos: "
            "give a video file or a folder of videos, or --format coco, yolo or voc for images."
        )
    return found


def _run_ray(args: argparse.Namespace, classes: list[str], options: QueryOptions) -> int:
    """``label --ray``: the same job on Ray Data (grounded_sam.distributed)."""
    from grounded_sam.distributed import label_dataset

    report = label_dataset(
        args.images_dir,
        classes,
        args.out,
        args.format,
        sam=args.sam,
        clip=args.clip,
        device=None if args.device == "auto" else args.device,
        dtype=None if args.dtype == "auto" else args.dtype,
        crop_style=args.crop_style,
        proposal_settings=proposal_settings(args),
        max_regions=args.max_regions,
        address=args.ray,
        concurrency=args.concurrency,
        batch_size=args.batch_size,
        gpus_per_worker=args.gpus_per_worker,
        cpus_per_worker=args.cpus_per_worker,
        restart=args.restart,
        progress=not (args.no_progress or args.quiet),
        verbose=args.verbose > 0,
        on_failure=print_failure,
        options=options,
    )
    if report.labeled:
        print(
            f"Ray: {report.images_per_minute:.1f} images/min over the whole run "
            f"({report.labeled} image(s); actors: {report.concurrency}, batch size "
            f"{args.batch_size}; labeling itself took {report.labeling_seconds:.1f}s)"
        )
    return _summary(args, classes, report, report.seconds)


def _summary(
    args: argparse.Namespace, classes: list[str], report: LabelReport, elapsed: float
) -> int:
    """Print the run's summary; 1 when some images failed."""
    done = report.reused + report.labeled
    print(
        f"{done} of {report.total} image(s) labeled in {elapsed:.1f}s "
        f"({report.labeled} now, {report.reused} from an earlier run), "
        f"{len(report.failed)} failed"
    )
    files = [str(p) for p in report.exported]
    return print_classes_and_failures(
        classes, report.instances, "instances", args.format, files, report.failed, "image(s)"
    )
