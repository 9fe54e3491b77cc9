"""``grounded-sam track``: phrases tracked through a video, with stable ids."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from grounded_sam.cli.common import (
    HelpFormatter,
    add_model_options,
    add_proposal_options,
    check_out_dir,
    load_engine,
    probability,
    say,
)
from grounded_sam.cli.options import add_query_options, query_options
from grounded_sam.cli.tracking import add_tracking_options, check_propagator, tracker_settings

__all__ = ["add_parser", "run"]

logger = logging.getLogger(__name__)

DESCRIPTION = """\
Track the objects a text prompt names through a video, with stable ids. VIDEO is a video
file (OpenCV or PyAV reads it: .mp4, .avi, .mov, .mkv, ...) or a folder of frame images.
The phrases are grounded on frame 0 and every --every frames (as 'segment' does on an
image); SAM 2.1's video predictor carries every object's mask between them. A detection
whose mask overlaps a track's (mask IoU >= --match-iou) keeps that track's id; a new object
gets a new id; a track whose object SAM 2.1 sees as gone for --lost-after frames ends.

Writes into --out, each file only once the whole video is done (never half-written); files
of an earlier run are replaced then (kept as they were if this run fails), or, with
--skip-existing, a video whose files are all there is skipped before any model loads:
  STEM_tracked.mp4   masks, boxes and "label #id confidence" drawn on every frame
  STEM.json          per frame: track_id, label, confidence, box (xyxy pixels), area,
                     mask (COCO RLE), object_score; plus every track's first/last frame
  STEM.mot.txt       MOTChallenge lines: frame,id,left,top,width,height,conf,-1,-1,-1
                     (frames 1-based)

Propagation needs a SAM 2.1 checkpoint (--propagator, or --sam when that is SAM 2.1) or
SAM 3: with --sam sam3 (and no --propagator) SAM 3's own tracker, from the same checkpoint,
carries the masks (its ViT backbone held once).
"""

EXAMPLE = """\
example:
  grounded-sam track street.mp4 --prompt "person, car" --sam sam2.1_t --out tracks/
  grounded-sam track frames/ --prompt dog --propagator sam2.1_b+ --every 5 --out tracks/
  grounded-sam track long.mp4 --prompt "boat" --sam sam2.1_t --max-frames 300 --out tracks/
"""


def add_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``track`` command."""
    parser = commands.add_parser(
        "track",
        help="track the objects a text prompt names through a video (stable ids)",
        description=DESCRIPTION,
        epilog=EXAMPLE,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("video", metavar="VIDEO", help="video file or folder of frames")
    parser.add_argument(
        "-p", "--prompt", required=True, help="phrase or comma-separated phrases, e.g. 'dog, car'"
    )
    parser.add_argument("-o", "--out", metavar="DIR", required=True, help="output folder")
    group = add_tracking_options(parser)
    group.add_argument(
        "--fps",
        type=float,
        default=None,
        help="frame rate of the annotated video (default: the video's own; 30 for a folder)",
    )
    group.add_argument(
        "--opacity", type=probability, default=0.5, help="mask fill opacity of the annotated video"
    )
    group.add_argument(
        "--no-video", action="store_true", help="write only the JSON and MOT files, no mp4"
    )
    group.add_argument(
        "--skip-existing",
        action="store_true",
        help="do nothing when every output file of this video is already in --out (default: "
        "replace them, atomically, once the new run is done)",
    )
    add_query_options(parser)
    add_proposal_options(parser)
    add_model_options(parser)
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run ``track``; returns the exit status."""
    from grounded_sam import parse_prompt
    from grounded_sam.video.api import track
    from grounded_sam.video.reader import open_video
    from grounded_sam.video.writers import TrackWriter

    phrases = parse_prompt(args.prompt)
    options = query_options(args)
    options.negatives_for(phrases)
    settings = tracker_settings(args)
    out = check_out_dir(args.out)
    if args.fps is not None and not args.fps > 0:
        raise ValueError(f"--fps must be a positive number, got {args.fps}.")
    # the video is checked (opened, first frame decoded) before the models load, and so is
    # the propagator's family when it is --sam's (its config only)
    probe = open_video(args.video, max_frames=args.max_frames, fps=args.fps)
    probe.close()
    paths = TrackWriter.output_paths(out, probe.stem, video=not args.no_video)
    present = [p for p in paths.values() if p.exists()]
    if present and len(present) == len(paths) and args.skip_existing:
        say(args, f"{probe.name}: already tracked into {out} (--skip-existing): skipped")
        print(f"{probe.name}: skipped, " + ", ".join(str(p) for p in present) + " exist")
        return 0
    if present:
        say(args, f"{probe.name}: will replace {', '.join(p.name for p in present)} in {out} "
                  "once this run is done")  # fmt: skip
    check_propagator(args)
    gs = load_engine(args)
    t0 = time.perf_counter()
    run_ = track(
        gs,
        args.video,
        phrases,
        settings=settings,
        max_frames=args.max_frames,
        propagator=args.propagator,
        options=gs.options,
        fps=args.fps,
        show_progress=not args.quiet,
    )
    reader = run_.reader
    h, w = reader.size
    header = {
        "video": str(Path(args.video)),
        "width": w,
        "height": h,
        "fps": reader.fps,
        "prompt": args.prompt,
        "phrases": phrases,
        "models": {"sam": args.sam, "clip": args.clip, "propagator": run_.propagator_id},
        "settings": settings.as_dict(),
    }
    say(args, f"{reader.name}: {w}x{h}, {reader.frame_count or '?'} frames at {reader.fps:g} fps")
    with TrackWriter(
        out, reader.stem, reader.size, reader.fps, header, opacity=args.opacity,
        video=not args.no_video,
    ) as writer:  # fmt: skip
        for index, frame, dets in run_.with_frames():
            writer.write(index, frame, dets)
        tracks = [t.summary() for t in run_.tracker.tracks.values()]
        stats = run_.stats
        written = writer.close({"tracks": tracks, "stats": vars(stats).copy()})
    say(args, f"{reader.name}: {stats.summary()} ({time.perf_counter() - t0:.1f}s)")
    print(f"{reader.name}: {stats.frames} frames, {stats.tracks_started} track(s)")
    print("  wrote " + ", ".join(str(p) for p in written.values()))
    return 0
