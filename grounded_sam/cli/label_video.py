"""``grounded-sam label`` on videos: each video tracked and written as COCO-video or MOT.

:mod:`grounded_sam.cli.label` hands a job here when IMAGES_DIR is a video file or a folder of
videos (:func:`grounded_sam.labeling.video.prepare_video_labeling`); the tracking flags are
those of ``track`` (:mod:`grounded_sam.cli.tracking`).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from grounded_sam.cli.common import load_engine, proposal_settings
from grounded_sam.cli.tracking import add_tracking_options, check_propagator, tracker_settings
from grounded_sam.video.reader import VIDEO_EXTENSIONS

if TYPE_CHECKING:
    from grounded_sam.grounding.options import QueryOptions

__all__ = ["DESCRIPTION", "add_video_options", "run_videos"]

_EXTENSIONS = " ".join(VIDEO_EXTENSIONS)

DESCRIPTION = f"""\
Videos: when IMAGES_DIR is a video file or a folder of videos (any case, in all subfolders:
{_EXTENSIONS}), each video is tracked as 'track' does (the classes are the
phrases; --every, --propagator, ... below) and the dataset is
  coco:  annotations.json in COCO-video (TAO style): videos (with neg_category_ids,
         not_exhaustive_category_ids), images = frames (video_id, frame_index), annotations
         with track_id / instance_id, RLE, bbox xywh, score
  mot:   SEQ/seqinfo.ini and SEQ/gt/gt.txt (MOTChallenge: frame,id,left,top,width,height,
         1,class,1) per video, SEQ/gt/scores.txt (confidences), seqmap.txt. class is the
         1-based index in --classes; TrackEval's MotChallenge2DBox evaluates only class 1 and
         by default (DO_PREPROC=True) takes gt classes 2, 7, 8, 12 as distractors and refuses
         ids above 13: evaluate more than one class with DO_PREPROC=False (class-agnostic)
         or one class at a time (the gt.txt rows of that class)
Frames are written (SEQ/img1/000001.jpg, ...) only with --frames. Resumable per video (a
finished video is never tracked again). A folder with both images and videos is refused:
label them into separate datasets.
"""


def add_video_options(parser: argparse.ArgumentParser) -> None:
    """The tracking flags, for video jobs."""
    group = add_tracking_options(
        parser,
        "videos (when IMAGES_DIR holds videos)",
        "Each video is tracked with the classes as phrases, as the 'track' command does "
        "(these flags do nothing for a folder of images).",
    )
    group.add_argument(
        "--frames",
        action="store_true",
        help="also write every frame as SEQ/img1/000001.jpg, ... (the files both formats "
        "name; JPEG, many times the video's size)",
    )


def job_config(args: argparse.Namespace, classes: list[str], options: QueryOptions):
    """The labeling run's configuration (models, proposals, options) from the flags."""
    from grounded_sam.labeling import labeling_config

    return labeling_config(
        classes,
        sam=args.sam,
        clip=args.clip,
        proposal_settings=proposal_settings(args),
        crop_style=args.crop_style,
        max_regions=args.max_regions,
        options=options,
    )


def print_failure(rel: str, reason: str) -> None:
    """Report one image or video that failed, above the progress bar."""
    from tqdm import tqdm

    tqdm.write(f"grounded-sam: failed: {rel}: {reason}", file=sys.stderr)


def run_videos(
    args: argparse.Namespace,
    classes: list[str],
    options: QueryOptions,
    root: Path,
    videos: list[Path],
) -> int:
    """Label the videos; returns 0, or 1 when some failed."""
    from grounded_sam.labeling.video import check_video_format, label_videos

    if args.ray is not None:
        raise ValueError(
            f"{args.images_dir} holds videos, and videos are labeled on one machine: drop --ray."
        )
    check_video_format(args.format)
    settings = tracker_settings(args)
    check_propagator(args)  # config only: before any weights load
    config = job_config(args, classes, options)
    t0 = time.perf_counter()
    report = label_videos(
        lambda: load_engine(args),  # loaded only if some video still needs tracking
        root,
        videos,
        classes,
        args.out,
        args.format,
        settings=settings,
        propagator=args.propagator,
        max_frames=args.max_frames,
        options=options,
        config=config,
        restart=args.restart,
        progress=not (args.no_progress or args.quiet),
        on_failure=print_failure,
        frames=args.frames,
    )
    elapsed = time.perf_counter() - t0
    done = report.reused + report.labeled
    print(
        f"{done} of {report.total} video(s) labeled in {elapsed:.1f}s "
        f"({report.labeled} now, {report.reused} from an earlier run), "
        f"{len(report.failed)} failed; {report.frames} frames"
    )
    files = [str(p) for p in report.exported]
    if len(files) > 4:  # mot: seqmap.txt and one folder per video
        files = [*files[:3], f"... ({len(files) - 1} sequence folders)"]
    return print_classes_and_failures(
        classes, report.instances, "tracks", args.format, files, report.failed, "video(s)"
    )


def print_classes_and_failures(
    classes: list[str],
    counts: dict[str, int],
    column: str,
    fmt: str,
    files: list[str],
    failed: list[tuple[str, str]],
    noun: str,
) -> int:
    """Print the per-class counts, the dataset's files and what failed; 1 when some failed.

    Args:
        classes: The class names, in order.
        counts: Class name -> count (``column``: instances of images, tracks of videos).
        column: Heading of the counts column.
        fmt: The dataset format.
        files: What the export wrote, as shown.
        failed: (relative path, reason) of each input left out.
        noun: What the inputs are, for the error line (``"image(s)"``, ``"video(s)"``).
    """
    width = max(5, *(len(c) for c in classes))
    print(f"  {'class':<{width}}  {column}")
    for name in classes:
        print(f"  {name:<{width}}  {counts.get(name, 0):>{len(column)}}")
    print(f"  {fmt} dataset: {', '.join(files)}")
    if failed:
        for rel, reason in failed:
            print(f"  failed: {rel}: {reason}")
        names = ", ".join(rel for rel, _ in failed)
        sys.stderr.write(
            f"grounded-sam: error: {len(failed)} {noun} failed and were left out: {names}\n"
        )
        return 1
    return 0
