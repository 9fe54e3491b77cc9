"""What segment --json and the shell say with a SAM 3 checkpoint: no CLIP, no regions."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from tests.cli.conftest import synthetic_image
from tests.sam.sam3_models import tiny_sam3_folder


def _args() -> list[str]:
    return ["--sam", str(tiny_sam3_folder()), "--device", "cpu", "--threshold", "0"]


def test_segment_json_names_no_clip(tmp_path: Path, capsys) -> None:
    from grounded_sam.cli.main import main

    image = synthetic_image(tmp_path / "shapes.png")
    argv = ["segment", str(image), "-p", "fig", "--top-k", "1", "--json", "--clip", "RN50:x"]
    assert main([*argv, *_args()]) == 0
    doc = json.loads(capsys.readouterr().out.splitlines()[0])
    assert doc["models"] == {"sam": str(tiny_sam3_folder()), "clip": None}


def test_shell_names_sam3_features_not_regions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    from grounded_sam.cli.main import main

    image = synthetic_image(tmp_path / "shapes.png")
    monkeypatch.setattr("sys.stdin", io.StringIO("fig\n"))
    assert main(["shell", str(image), *_args()]) == 0
    out = capsys.readouterr().out
    assert "(SAM 3 vision features)" in out and "regions)" not in out
