"""main() in-process for cases that need no subprocess (same code as the console script)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from grounded_sam.cli import main as cli_main
from grounded_sam.cli.common import format_table, unique_stems
from tests.cli.conftest import error_lines, synthetic_image
from tests.export.conftest import CLASSES, scene_detections


def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = cli_main.main(argv)
    except SystemExit as exc:  # argparse usage errors and --help
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize(
    ("argv", "status", "needle"),
    [
        (["segment", "{img}", "-p", "dog"], 1, "Give --out DIR"),
        (["segment", "{img}", "-p", "dog", "--json", "--opacity", "3"], 1, "--opacity"),
        (["segment", "{img}", "-p", "dog", "--threshold", "2"], 2, "--threshold"),
        (["segment", "{img}", "-p", "dog", "--top-k", "-1"], 2, "--top-k"),
        (["label", "{tmp}", "-c", "dog", "-o", "{file}"], 1, "is a file"),
        (["label", "{tmp}", "-c", "dog", "-o", "{tmp}/.."], 1, "contains the images folder"),
        (["everything", "{tmp}", "-o", "{tmp}/out"], 1, "is a folder, not an image"),
        (["shell", "{tmp}/missing.png"], 1, "Image not found"),
        (["segment"], 2, "required"),
        (["segment", "{img}", "--json"], 1, "Give --prompt PHRASES, --exemplar"),
        (["segment", "{img}", "--exemplar", "1,2,3", "--json"], 2, "x1,y1,x2,y2"),
        (["segment", "{img}", "-p", "dog", "--negative", "Dog", "--json"], 1, "both a phrase"),
        (["segment", "{img}", "-p", "dog", "--calibration", "soft"], 2, "--calibration"),
        (["label", "{tmp}", "-c", "dog", "--negative", "dog", "-o", "{tmp}/o"], 1, "both a"),
        (["bogus"], 2, "invalid choice"),
    ],
)
def test_usage_and_input_errors_are_one_line(
    argv: list[str], status: int, needle: str, tmp_path: Path, capsys
) -> None:
    img = synthetic_image(tmp_path / "img.png")
    out_file = tmp_path / "file.txt"
    out_file.write_text("x")
    argv = [a.format(img=img, tmp=tmp_path, file=out_file) for a in argv]
    code, out, err = run_main(argv, capsys)
    assert code == status
    lines = error_lines(err)
    assert len(lines) == 1 and lines[0].startswith("grounded-sam") and needle in lines[0], err
    assert out == ""


def test_ctrl_c_exits_130_without_traceback(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys
) -> None:
    def interrupted(args: argparse.Namespace) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr("grounded_sam.cli.segment.run", interrupted)
    img = synthetic_image(tmp_path / "img.png")
    code, _, err = run_main(["segment", str(img), "-p", "dog", "--json"], capsys)
    assert code == 130 and error_lines(err) == ["grounded-sam: interrupted"]


def test_table_and_stems() -> None:
    table = format_table(scene_detections(80, 100, CLASSES)).splitlines()
    assert len(table) == 4 and "label" in table[0] and "area" in table[0]
    assert "hazelnut" in table[3] and "0.600" in table[3] and "[4, 60, 96, 72]" in table[3]
    assert unique_stems([Path("a/x.jpg"), Path("b/x.png"), Path("y.jpg"), Path("c/x.bmp")]) == [
        "x",
        "x_1",
        "y",
        "x_2",
    ]
