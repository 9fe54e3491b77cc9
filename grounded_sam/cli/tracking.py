"""The tracking flags of ``track`` and of ``label`` on videos, and the settings they make.

One declaration of ``--every``, ``--max-frames``, ``--match-iou``, ``--lost-after``,
``--max-tracks`` and ``--propagator``; the defaults come from
:class:`~grounded_sam.video.types.TrackerSettings` (torch-free), so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse

from grounded_sam.cli.common import positive_int, probability

__all__ = ["add_tracking_options", "check_propagator", "tracker_settings"]


def add_tracking_options(
    parser: argparse.ArgumentParser, title: str = "tracking", description: str | None = None
) -> argparse._ArgumentGroup:
    """Add the tracking flags in a group; returns the group (a command may add more to it)."""
    from grounded_sam.video.types import TrackerSettings

    defaults = TrackerSettings()
    group = parser.add_argument_group(title, description)
    group.add_argument(
        "--every",
        type=positive_int,
        default=defaults.every,
        metavar="N",
        help="ground the phrases on frame 0 and every N frames (1: every frame); objects are "
        "propagated in between",
    )
    group.add_argument(
        "--max-frames",
        type=positive_int,
        default=None,
        metavar="M",
        help="stop after M frames (default: the whole video)",
    )
    group.add_argument(
        "--match-iou",
        type=probability,
        default=defaults.match_iou,
        help="a key-frame detection keeps a track's id when their masks' IoU is at least this",
    )
    group.add_argument(
        "--lost-after",
        type=positive_int,
        default=defaults.lost_after,
        metavar="K",
        help="a track ends after K consecutive frames SAM 2.1 sees its object as gone",
    )
    group.add_argument(
        "--max-tracks",
        type=positive_int,
        default=defaults.max_tracks,
        help="at most this many live tracks (each is propagated on every frame)",
    )
    group.add_argument(
        "--propagator",
        metavar="MODEL",
        default=None,
        help="SAM 2.1 checkpoint that propagates masks (Hub id, alias sam2.1_t / sam2.1_s / "
        "sam2.1_b+ / sam2.1_l, or folder), or a SAM 3 one (its tracker); default: --sam, which "
        "must then be SAM 2.1 or SAM 3",
    )
    return group


def tracker_settings(args: argparse.Namespace):
    """The :class:`~grounded_sam.video.types.TrackerSettings` of the parsed flags."""
    from grounded_sam.video.types import TrackerSettings

    return TrackerSettings(
        every=args.every,
        match_iou=args.match_iou,
        lost_after=args.lost_after,
        max_tracks=args.max_tracks,
    )


def check_propagator(args: argparse.Namespace) -> None:
    """Refuse early (config only, no weights) a checkpoint that cannot propagate masks.

    Checked: --propagator when given, else --sam; either must be SAM 2.1 or a SAM 3 checkpoint
    that holds its tracker.

    Raises:
        ValueError: Saying which flag to change.
        grounded_sam.ModelLoadError: An image-only SAM 3 save, or an unreadable checkpoint.
    """
    from grounded_sam.video.api import check_propagates

    if args.propagator is not None:
        check_propagates(args.propagator, "--propagator")
    else:
        check_propagates(args.sam, "--sam")
