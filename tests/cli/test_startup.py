"""``grounded-sam --help`` and ``COMMAND --help`` do not import the heavy libraries.

The time itself is measured, not asserted (the machine is shared and noisy): see the
numbers in the issue's closing note. What makes --help fast is checked here instead: no
torch, transformers, open_clip, supervision, gradio or OpenCV in ``sys.modules``.
"""

from __future__ import annotations

import json
import subprocess
import sys

from tests.cli.conftest import cli_env
from tests.cli.test_help import subparsers

COMMANDS = sorted(subparsers())  # command names as registered (e.g. export-onnx)

HEAVY = ("torch", "torchvision", "transformers", "open_clip", "supervision", "gradio", "cv2")

SCRIPT = """
import contextlib, io, json, sys
from grounded_sam.cli.main import main
shown = {}
for argv in [["--help"], *[[c, "--help"] for c in sys.argv[1:]]]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            main(argv)
        except SystemExit as exc:
            assert exc.code == 0, (argv, exc.code)
    shown[" ".join(argv)] = len(out.getvalue())
print(json.dumps({"shown": shown, "heavy": sorted(m for m in sys.modules if m.split(".")[0]
                  in %r)}))
"""


def test_help_imports_no_heavy_module() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT % (HEAVY,), *COMMANDS],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert set(result["shown"]) == {"--help", *(f"{c} --help" for c in COMMANDS)}
    assert all(length > 200 for length in result["shown"].values())  # real help text
    assert result["heavy"] == [], f"--help imported {result['heavy']}"


def test_package_import_is_lazy_but_complete() -> None:
    code = (
        "import sys, grounded_sam as g; assert 'torch' not in sys.modules; "
        "names = [getattr(g, n) for n in g.__all__]; assert 'torch' in sys.modules; "
        "print(len(names))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=cli_env(), timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    import grounded_sam

    assert int(proc.stdout) == len(grounded_sam.__all__) >= 13
