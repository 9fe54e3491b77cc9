"""``grounded-sam shell``: index an image once, then answer phrase after phrase."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

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
)
from grounded_sam.cli.options import add_query_options, query_options
from grounded_sam.limits import MAX_PROMPT_CHARS

__all__ = ["add_parser", "run"]

logger = logging.getLogger(__name__)

PROMPT = "phrase> "
QUIT = {"", "quit", "exit", "q", ":q"}
MAX_LINE_CHARS = MAX_PROMPT_CHARS
"""Longest line read (no prompt is longer); the rest of a longer line is read in chunks of
this size and discarded, so a huge line is never held in memory."""

DESCRIPTION = """\
Interactive prompt on one image. The image is indexed once (SAM proposals + CLIP region
embeddings); each phrase you type is then answered from that index: the table of detections
and the time the answer took are printed, and STEM_overlay.png in --out (if given) is
rewritten.
Type comma-separated phrases; an empty line, 'quit' or Ctrl-D ends. Reads stdin, so
phrases can also be piped in: printf 'dog\\ncat, tree\\n' | grounded-sam shell photo.jpg
"""


def add_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``shell`` command."""
    parser = commands.add_parser(
        "shell",
        help="type phrases one after another on one image (indexed once)",
        description=DESCRIPTION,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("image", metavar="IMAGE", help="image file")
    parser.add_argument(
        "-o",
        "--out",
        metavar="DIR",
        default=None,
        help="folder where STEM_overlay.png is rewritten after each phrase (none: no file)",
    )
    parser.add_argument(
        "--opacity", type=float, default=0.5, help="mask fill opacity of the overlay, 0 to 1"
    )
    add_query_options(parser)
    add_proposal_options(parser)
    add_model_options(parser)
    parser.set_defaults(run=run)
    return parser


def _too_long(chars: int) -> ValueError:
    return ValueError(
        f"line of {chars:,} characters skipped: a line is at most {MAX_LINE_CHARS:,} "
        "characters (the longest prompt). Type shorter phrases."
    )


def _read_phrase(interactive: bool) -> str | None:
    """One line from stdin (None at end of input).

    Raises:
        ValueError: The line is over :data:`MAX_LINE_CHARS` (it was read and discarded).
    """
    if interactive:
        try:
            line = input(PROMPT)
        except EOFError:
            return None
        if len(line) > MAX_LINE_CHARS:
            raise _too_long(len(line))
        return line
    sys.stdout.write(PROMPT)
    sys.stdout.flush()
    line = sys.stdin.readline(MAX_LINE_CHARS + 1)
    if not line:
        return None
    sys.stdout.write("\n")
    if len(line) > MAX_LINE_CHARS and not line.endswith("\n"):
        chars = len(line)
        while line and not line.endswith("\n"):  # discard the rest, a bounded chunk at a time
            line = sys.stdin.readline(MAX_LINE_CHARS + 1)
            chars += len(line)
        raise _too_long(chars - line.endswith("\n"))
    return line.rstrip("\n")


def run(args: argparse.Namespace) -> int:
    """Run ``shell``; returns the exit status."""
    from grounded_sam import load_image
    from grounded_sam.export.annotate import annotate_detections
    from grounded_sam.export.files import atomic_write_png

    if not 0.0 <= args.opacity <= 1.0:
        raise ValueError(f"--opacity must be in [0, 1], got {args.opacity}.")
    query_options(args)  # a bad combination fails before the models load
    out = check_out_dir(args.out)
    (path,) = check_images_exist([args.image])
    image = load_image(path)
    gs = load_engine(args)
    t0 = time.perf_counter()
    progress = stage_progress(args)
    index = gs.index(image, show_progress=progress)
    say(args, f"{path}: indexed: {progress.summary()}")
    kept = "SAM 3 vision features" if gs.grounds_text else f"{len(index)} regions"
    print(
        f"{path}: indexed {image.shape[1]}x{image.shape[0]} in {time.perf_counter() - t0:.2f}s "
        f"({kept}). Type phrases (comma-separated); empty line or 'quit' ends."
    )
    overlay_path = None if out is None else Path(out) / f"{path.stem}_overlay.png"
    interactive = sys.stdin.isatty()
    if interactive:
        try:
            import readline  # noqa: F401  (line editing and history for input())
        except ImportError:  # pragma: no cover - Windows
            pass
    options = query_options(args)
    while True:
        try:
            line = _read_phrase(interactive)
        except ValueError as exc:  # an over-long line, discarded: the shell goes on
            sys.stderr.write(f"grounded-sam: error: {exc}\n")
            continue
        if line is None or line.strip().lower() in QUIT:
            break
        t0 = time.perf_counter()
        try:
            dets = gs.query(index, line, options)
        except (ValueError, TypeError) as exc:
            sys.stderr.write(f"grounded-sam: error: {' '.join(str(exc).split())}\n")
            continue
        elapsed = time.perf_counter() - t0
        print(format_table(dets))
        line = f"{len(dets)} instance(s) in {elapsed * 1000:.0f} ms"
        if overlay_path is not None:
            atomic_write_png(overlay_path, annotate_detections(image, dets, args.opacity))
            line += f"; overlay: {overlay_path}"
        print(line)
        sys.stdout.flush()
    return 0
