"""``grounded-sam app``: serve the web page (needs the ``app`` extra: gradio)."""

from __future__ import annotations

import argparse
import logging

from grounded_sam.cli.common import (
    HelpFormatter,
    add_model_options,
    add_proposal_options,
    load_engine,
    positive_int,
)
from grounded_sam.cli.options import add_query_options

__all__ = ["add_parser", "run"]

logger = logging.getLogger(__name__)

DESCRIPTION = """\
Serve the web page: upload an image (indexed once), type phrases, see labeled masks,
click points or a box for SAM prompts, download masks / overlay / JSON; in the Video
tab, track phrases through a short clip (SAM 2.1 or SAM 3: --sam sam2.1_t / sam3, or
--propagator). Binds to
127.0.0.1 (this machine only) unless --host says otherwise; --share is off unless asked.
Needs gradio: pip install -e ".[app]" (from a clone).
"""


def add_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``app`` command."""
    parser = commands.add_parser(
        "app",
        help="serve the web page (gradio) on this machine",
        description=DESCRIPTION,
        formatter_class=HelpFormatter,
    )
    group = parser.add_argument_group("server")
    group.add_argument("--host", default="127.0.0.1", help="interface to bind (0.0.0.0: network)")
    group.add_argument("--port", type=positive_int, default=7860, help="TCP port")
    group.add_argument(
        "--share", action="store_true", help="ask gradio for a public *.gradio.live link"
    )
    group.add_argument(
        "--max-file-size", default="20mb", help="largest upload accepted (e.g. 20mb)"
    )
    group.add_argument(
        "--max-image-side", type=positive_int, default=4096, help="largest image side in pixels"
    )
    group.add_argument(
        "--concurrency-limit",
        type=positive_int,
        default=1,
        help="model requests run at once; further requests wait in the queue",
    )
    group.add_argument(
        "--max-index-memory",
        type=positive_int,
        default=2048,
        metavar="MIB",
        help="memory in MiB for the image indexes all sessions share (least recently used "
        "ones are dropped beyond it and built again when needed)",
    )
    group.add_argument(
        "--propagator",
        metavar="MODEL",
        default=None,
        help="SAM 2.1 checkpoint of the Video tab, which propagates masks (Hub id, alias "
        "sam2.1_t / sam2.1_s / sam2.1_b+ / sam2.1_l, or folder), or a SAM 3 one (its tracker); "
        "loaded on the first clip; default: --sam, which must then be SAM 2.1 or SAM 3",
    )
    add_query_options(parser, ("detection",))  # the page has its own grounding controls
    add_proposal_options(parser)
    add_model_options(parser)
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run ``app``; returns the exit status once the server stops."""
    from grounded_sam.app.server import require_gradio, serve

    require_gradio()  # before the (slow) model load
    gs = load_engine(args)
    serve(
        gs,
        host=args.host,
        port=args.port,
        share=args.share,
        max_file_size=args.max_file_size,
        max_image_side=args.max_image_side,
        concurrency_limit=args.concurrency_limit,
        max_index_bytes=args.max_index_memory * 1024**2,
        propagator=args.propagator,
    )
    return 0
