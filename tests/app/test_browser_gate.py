"""Without a browser the real-browser tests skip with one line, except in CI, where they fail.

Runs the browser tests of tests/app/test_browser.py in a subprocess with Chromium at a path
that does not exist, so this checks the gate on every machine (with or without Chromium).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
#: The tests that use the ``browser`` fixture (the raw-HTTP test in that file needs none).
BROWSER_TESTS = [
    "tests/app/test_browser.py::test_phrases_exports_and_prompts_in_a_real_browser",
    "tests/app/test_browser.py::test_two_tabs_keep_their_own_images_and_results",
]


def run_browser_tests(**env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items()
            if k not in ("CI", "GROUNDED_SAM_REQUIRE_BROWSER")}  # fmt: skip
    base.update(GROUNDED_SAM_CHROMIUM="/nonexistent/chromium", **env)
    return subprocess.run(
        [sys.executable, "-m", "pytest", *BROWSER_TESTS, "-q", "-ra", "-p", "no:cacheprovider"],
        capture_output=True, text=True, env=base, cwd=REPO, timeout=300,
    )  # fmt: skip


def test_missing_browser_is_one_skip_line_locally() -> None:
    proc = run_browser_tests()
    assert proc.returncode == 0, proc.stdout[-3000:]
    skips = [line for line in proc.stdout.splitlines() if line.startswith("SKIPPED")]
    assert len(skips) == 1, proc.stdout[-3000:]
    assert "Chromium not found at /nonexistent/chromium" in skips[0]
    assert "apt-get install -y chromium" in skips[0]
    assert "failed" not in proc.stdout.splitlines()[-1]


def test_missing_browser_fails_when_required() -> None:
    proc = run_browser_tests(GROUNDED_SAM_REQUIRE_BROWSER="1")  # CI=true works the same way
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert "Chromium not found at /nonexistent/chromium" in proc.stdout
    assert "SKIPPED" not in proc.stdout
