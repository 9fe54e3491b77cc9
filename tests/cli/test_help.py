from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from grounded_sam.cli.main import build_parser
from tests.cli.conftest import cli_env

COMMANDS = ["segment", "everything", "label", "track", "shell", "app", "serve", "export-onnx"]


def subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def test_every_command_is_registered() -> None:
    assert sorted(subparsers()) == sorted(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_help_lists_every_option_with_its_default(command: str) -> None:
    parser = subparsers()[command]
    text = " ".join(parser.format_help().split())  # undo line wrapping
    options = [a for a in parser._actions if a.option_strings and a.dest != "help"]
    assert options
    for action in options:
        for flag in action.option_strings:
            assert flag in text, f"{command} --help does not list {flag}"
        if action.required:
            continue
        shown = f"(default:{action.default})".replace(" ", "")
        # argparse may wrap a default at a hyphen ("sam-vit-" / "base"): compare unwrapped.
        assert shown in text.replace(" ", ""), (
            f"{command} --help does not show the default of {action.dest}"
        )
    assert text.count("(default:") >= sum(not a.required for a in options)


def test_model_defaults_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GROUNDED_SAM_SAM", "/models/my-sam")
    monkeypatch.setenv("GROUNDED_SAM_CLIP", "local-dir:/models/my-clip")
    args = build_parser().parse_args(["segment", "x.jpg", "--prompt", "dog", "--json"])
    assert (args.sam, args.clip) == ("/models/my-sam", "local-dir:/models/my-clip")
    monkeypatch.delenv("GROUNDED_SAM_SAM")
    from grounded_sam import DEFAULT_SAM

    assert build_parser().parse_args(["shell", "x.jpg"]).sam == DEFAULT_SAM


def test_console_script_help() -> None:
    script = shutil.which("grounded-sam", path=str(Path(sys.executable).parent))
    cmd = [script] if script else [sys.executable, "-m", "grounded_sam.cli.main"]
    proc = subprocess.run(
        [*cmd, "label", "--help"], capture_output=True, text=True, env=cli_env(), timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    for flag in ("--classes", "--format", "--out", "--restart", "--threshold", "--sam"):
        assert flag in proc.stdout
    assert "{coco,yolo,voc,mot}" in proc.stdout and "(default: coco)" in proc.stdout
