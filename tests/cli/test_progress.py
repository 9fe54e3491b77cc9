"""Long work shows progress and timings on stderr; -q silences it; --json keeps stdout JSON."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli.conftest import run_cli, synthetic_image


def bar_lines(stderr: str) -> list[str]:
    return [part for line in stderr.splitlines() for part in line.split("\r") if part.strip()]


def test_segment_json_shows_progress_on_stderr_only(model_args: list[str], tmp_path: Path) -> None:
    image = synthetic_image(tmp_path / "shapes.png")
    proc = run_cli(["segment", image, "--prompt", "disc, square", "--json", *model_args])
    assert proc.returncode == 0, proc.stderr
    docs = [json.loads(line) for line in proc.stdout.splitlines()]  # pure JSON lines
    assert len(docs) == 1 and docs[0]["image"].endswith("shapes.png")
    parts = bar_lines(proc.stderr)
    # segment runs the shared many-images loop: one bar over the images, one bar per
    # indexing stage of each image, and a timing line per image with the stage times
    assert any(p.startswith("Segmenting:") and "100%" in p for p in parts), parts
    assert any(p.startswith("SAM encoder:") for p in parts), parts
    assert any(p.startswith("proposals:") and "100%" in p for p in parts), parts
    assert any(p.startswith("grounded-sam: models ready in ") for p in parts)
    timing = [p for p in parts if p.startswith(f"grounded-sam: {image}: SAM encoder ")]
    assert len(timing) == 1 and "CLIP regions" in timing[0], parts
    assert "segmented in " in timing[0], parts


def test_quiet_piped_shell_prints_nothing_on_stderr_and_writes_nothing(
    model_args: list[str], tmp_path: Path
) -> None:
    image = synthetic_image(tmp_path / "in" / "shapes.png")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    proc = run_cli(["shell", image, "-q", *model_args], stdin="disc\nsquare\n", cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert proc.stdout.count(" instance(s) in ") == 2 and "overlay:" not in proc.stdout
    assert list(cwd.iterdir()) == []  # no --out: no overlay file in the current folder
