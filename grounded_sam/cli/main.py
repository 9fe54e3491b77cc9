"""Entry point of the ``grounded-sam`` console script.

Every command is a thin layer over :class:`grounded_sam.GroundedSAM`. Errors caused by the
user's input end the program with one line on stderr (``grounded-sam: error: ...``) and a
non-zero exit status, never a traceback (``-vv`` logs the traceback for debugging).

Exit status: 0 success; 1 error, or some images failed; 2 bad command-line usage;
130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from collections.abc import Sequence

from grounded_sam.cli.common import PROG, ArgumentParser, HelpFormatter
from grounded_sam.errors import ModelLoadError

__all__ = ["build_parser", "main"]

logger = logging.getLogger("grounded_sam.cli")

EXAMPLES = """\
examples:
  grounded-sam segment photo.jpg --prompt "dog, frisbee" --out results/
  grounded-sam segment photo.jpg --prompt "dog" --json > dog.json
  grounded-sam everything photo.jpg --out results/
  grounded-sam label images/ --classes "date, fig, hazelnut" --format coco --out dataset/
  grounded-sam track clip.mp4 --prompt "person, car" --sam sam2.1_t --out tracks/
  grounded-sam shell photo.jpg
  grounded-sam app                      # web page on http://127.0.0.1:7860
  grounded-sam serve                    # HTTP API + Label Studio backend on :9090

Models default to $GROUNDED_SAM_SAM / $GROUNDED_SAM_CLIP when set.
Run 'grounded-sam COMMAND --help' for the options of a command.
"""


#: Command modules under grounded_sam.cli, in --help order. Each defines
#: ``add_parser(commands)`` and ``run(args)``; its parser must be built without heavy imports
#: (torch, transformers, supervision, gradio are imported inside ``run``) so that
#: ``grounded-sam --help`` stays fast. tests/cli/test_startup.py checks this.
COMMANDS = ("segment", "everything", "label", "track", "shell", "app", "serve", "export_onnx")


class _MainParser(ArgumentParser):
    """The top-level parser: ``-v`` / ``-q`` count before the sub-command as after it.

    ``grounded-sam -v segment ...`` and ``grounded-sam segment ... -v`` mean the same. The
    top-level flags are stored under their own names (a sub-command's defaults would
    otherwise overwrite them) and folded into the sub-command's ``verbose`` / ``quiet``
    after parsing, so every caller of ``parse_args`` sees one ``args.verbose`` (the sum of
    both counts) and one ``args.quiet``.
    """

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        """Parse, then fold the top-level ``-v`` / ``-q`` into the sub-command's."""
        parsed, extras = super().parse_known_args(args, namespace)
        global_verbose = vars(parsed).pop("global_verbose", 0)
        global_quiet = vars(parsed).pop("global_quiet", False)
        parsed.verbose = getattr(parsed, "verbose", 0) + global_verbose
        parsed.quiet = getattr(parsed, "quiet", False) or global_quiet
        return parsed, extras


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with all sub-commands."""
    import importlib

    from grounded_sam import __version__

    parser = _MainParser(
        prog=PROG,
        description="Text-prompted grounded segmentation: type a phrase, get instance masks\n"
        "with labels and confidences (SAM region proposals scored by CLIP, refined by SAM).",
        epilog=EXAMPLES,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        dest="global_verbose",
        help="log progress (-v) or debug details and tracebacks (-vv); also after COMMAND",
    )
    parser.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        dest="global_quiet",
        help="no progress bars or timing lines on stderr; also after COMMAND",
    )
    commands = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=ArgumentParser
    )
    for name in COMMANDS:
        importlib.import_module(f"grounded_sam.cli.{name}").add_parser(commands)
    return parser


def _setup_logging(verbose: int) -> None:
    logging.basicConfig(
        level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    if verbose:
        logging.getLogger("grounded_sam").setLevel(logging.DEBUG if verbose > 1 else logging.INFO)
    else:
        warnings.simplefilter("ignore")
        # Hub retries while offline are noise next to our one-line error.
        logging.getLogger("huggingface_hub").setLevel(logging.ERROR)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line.

    Args:
        argv: Arguments without the program name (default ``sys.argv[1:]``).

    Returns:
        The exit status (0 success, 1 error or failed images, 130 interrupted). Usage
        errors and ``--help`` exit through ``SystemExit`` (status 2 and 0).
    """
    try:
        args = build_parser().parse_args(argv)
        _setup_logging(args.verbose)
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        sys.stderr.write(f"\n{PROG}: interrupted\n")
        return 130
    except BrokenPipeError:
        # The reader of stdout went away (e.g. `| head`): stop quietly. Point stdout at
        # devnull so that the final flush at exit does not fail again.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 1
    except (ValueError, FileNotFoundError, TypeError, OSError, ImportError) as exc:
        # ModelLoadError is an OSError; its message names the model and the fix.
        logger.debug("Traceback of the error below:", exc_info=True)
        message = _one_line(exc)
        if isinstance(exc, ModelLoadError):
            message += (
                " On the command line, pass a local copy with --sam DIR / --clip local-dir:DIR"
                " (or set $GROUNDED_SAM_SAM / $GROUNDED_SAM_CLIP)."
            )
        sys.stderr.write(f"{PROG}: error: {message}\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())
