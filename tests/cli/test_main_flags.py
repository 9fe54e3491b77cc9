"""-v / -q before the sub-command mean the same as after it (cli/main._MainParser)."""

from __future__ import annotations

import argparse
import logging

import pytest

from grounded_sam.cli import export_onnx
from grounded_sam.cli import main as cli_main
from grounded_sam.cli.main import build_parser

SEGMENT = ["segment", "x.jpg", "--prompt", "dog", "--json"]


@pytest.mark.parametrize(
    ("argv", "verbose", "quiet"),
    [
        (SEGMENT, 0, False),
        (["-v", *SEGMENT], 1, False),
        ([*SEGMENT, "-v"], 1, False),
        (["-vv", *SEGMENT], 2, False),
        (["--verbose", *SEGMENT, "-v"], 2, False),  # both places add up
        (["-q", *SEGMENT], 0, True),
        ([*SEGMENT, "--quiet"], 0, True),
        (["-q", "-v", "label", "imgs", "-c", "a", "-o", "o"], 1, True),
        (["-v", "export-onnx", "-o", "o"], 1, False),
        (["-q", "export-onnx", "-o", "o"], 0, True),  # no -q of its own: still one args.quiet
    ],
)
def test_global_flags_before_or_after_the_command(
    argv: list[str], verbose: int, quiet: bool
) -> None:
    args = build_parser().parse_args(argv)
    assert (args.verbose, args.quiet) == (verbose, quiet)
    assert not hasattr(args, "global_verbose") and not hasattr(args, "global_quiet")


def test_flag_before_the_command_reaches_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[argparse.Namespace] = []
    monkeypatch.setattr(export_onnx, "run", lambda args: seen.append(args) or 0)
    monkeypatch.setattr(logging.getLogger("grounded_sam"), "level", logging.NOTSET)
    assert cli_main.main(["-vv", "export-onnx", "-o", "o"]) == 0
    assert seen[0].verbose == 2
    assert logging.getLogger("grounded_sam").level == logging.DEBUG


def test_flag_before_the_command_is_in_the_usage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    assert "[-v] [-q] COMMAND" in capsys.readouterr().out
