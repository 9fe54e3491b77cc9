"""Run the real ``grounded-sam`` entry point as a subprocess with tiny random models."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

ENTRY = [sys.executable, "-m", "grounded_sam.cli.main"]
TIMEOUT = 300


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GROUNDED_SAM_")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONWARNINGS="ignore")
    env.update(extra)
    return env


def run_cli(
    args: Sequence[str | os.PathLike],
    *,
    stdin: str | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess:
    """Run ``python -m grounded_sam.cli.main ARGS`` and capture text output."""
    return subprocess.run(
        [*ENTRY, *map(str, args)],
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        env=env or cli_env(),
        cwd=cwd,
        timeout=TIMEOUT,
    )


PACED_ENTRY = [sys.executable, str(Path(__file__).with_name("paced_cli.py"))]
"""The CLI with a pause after each labeled image (``paced_cli.py``), for interrupting runs."""


def popen_cli(
    args: Sequence[str | os.PathLike], log: Path, entry: Sequence[str] = tuple(ENTRY)
) -> subprocess.Popen:
    """Start the CLI in the background; stdout and stderr go to LOG.out / LOG.err."""
    return subprocess.Popen(
        [*entry, *map(str, args)],
        stdin=subprocess.DEVNULL,
        stdout=log.with_suffix(".out").open("w"),
        stderr=log.with_suffix(".err").open("w"),
        env=cli_env(),
    )


def synthetic_image(path: Path, h: int = 96, w: int = 128, seed: int = 0) -> Path:
    """A bright disc and a dark square on a noisy background."""
    rng = np.random.default_rng(seed)
    img = rng.integers(90, 140, (h, w, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:h, :w]
    img[(yy - h // 3) ** 2 + (xx - w // 3) ** 2 < (h // 5) ** 2] = (230, 180, 40)
    img[h // 2 : h // 2 + h // 4, w // 2 : w // 2 + w // 4] = (30, 30, 90)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)
    return path


#: Progress on stderr (off with -q): tqdm bars and the "models ready" / timing lines.
_PROGRESS = re.compile(
    r"^\s*[\w ()-]+:\s+\d+%\|"
    r"|^grounded-sam: (models ready in |.*: (SAM encoder \d|indexed: |segmented in ))"
)


def error_lines(stderr: str) -> list[str]:
    """Non-empty stderr lines, less the progress bars and timing lines that -q turns off."""
    parts = (part for line in stderr.splitlines() for part in line.split("\r"))
    return [p for p in parts if p.strip() and not _PROGRESS.match(p)]
