"""No network, nothing cached, HF_HUB_OFFLINE *not* set: one line, in seconds, no hub noise.

The Hub is made unreachable by pointing HF_ENDPOINT at a closed local port; the Hugging Face
cache is an empty folder. Before the fix this took 30 s (SAM's retries, with refused
connections) to 99 s (both models, with DNS failures) behind dozens of retry warnings.
"""

from __future__ import annotations

import time
from pathlib import Path

from tests.cli.conftest import cli_env, run_cli, synthetic_image

EXAMPLE = Path(__file__).parents[2] / "grounded_sam" / "app" / "examples" / "fruits.jpg"


def test_default_models_offline_fail_fast_with_one_line(tmp_path: Path) -> None:
    env = cli_env(HF_HOME=str(tmp_path / "hf-home"), HF_ENDPOINT="http://127.0.0.1:9")
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_CACHE", "HF_HUB_VERBOSITY"):
        env.pop(var, None)
    image = EXAMPLE if EXAMPLE.is_file() else synthetic_image(tmp_path / "img.png")
    t0 = time.perf_counter()
    proc = run_cli(
        ["segment", image, "--prompt", "fig", "--out", tmp_path / "out"], env=env, cwd=tmp_path
    )
    elapsed = time.perf_counter() - t0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 1, proc.stderr
    assert len(lines) == 1, proc.stderr  # no retry warnings, no "ERROR root: ..." lines
    line = lines[0]
    assert line.startswith("grounded-sam: error: Cannot load SAM model 'facebook/sam-vit-base' "
                           "and CLIP model 'ViT-B-16:laion2b_s34b_b88k'"), line  # fmt: skip
    assert "cannot be reached" in line  # decided by the one probe, before any request
    assert "hf download facebook/sam-vit-base --local-dir" in line
    assert "python -m grounded_sam.clip.local_copy" in line
    assert proc.stdout == "" and not (tmp_path / "out").exists()
    # Start-up (torch, open_clip imports) dominates; the retry storm alone took 23 s+ per
    # file. A loose bound, for a shared machine: the measured time is printed.
    print(f"offline failure after {elapsed:.1f}s")
    assert elapsed < 60, f"took {elapsed:.1f}s"
