"""Helpers shared by the benchmark scripts: machine description, timing summaries, paths."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import statistics
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def ensure_repo_on_path() -> None:
    """Make ``benchmarks`` and ``tests`` importable when a script is run by its path."""
    root = str(REPO)
    if root not in sys.path:
        sys.path.insert(0, root)


def cpu_model() -> str:
    """The CPU model name (from /proc/cpuinfo on Linux)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """A few SIMD flags that matter for CPU inference speed (AVX-512, VNNI, AMX, bf16)."""
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return [w for w in wanted if w in flags]
    except OSError:
        pass
    return []


def machine_info(device: str = "cpu") -> dict[str, Any]:
    """What a results table needs to be reproducible: hardware, software, date, load."""
    import torch

    info: dict[str, Any] = {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
    }
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:  # pragma: no cover
        pass
    try:
        import open_clip

        info["open_clip"] = open_clip.__version__
    except ImportError:  # pragma: no cover
        pass
    try:
        info["loadavg_1m"] = round(os.getloadavg()[0], 2)
    except OSError:  # pragma: no cover
        pass
    info.update(git_state())
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
    return info


def git_state() -> dict[str, Any]:
    """The engine's version: git commit of the repo and whether the tree had local changes."""
    import subprocess

    def run(*args: str) -> str:
        try:
            proc = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True,
                                  timeout=10, check=False)
        except (OSError, subprocess.SubprocessError):
            return ""
        return proc.stdout.strip() if proc.returncode == 0 else ""

    commit = run("rev-parse", "--short", "HEAD")
    if not commit:
        return {}
    dirty = run("status", "--porcelain", "--untracked-files=no", "--", "grounded_sam")
    return {"git_commit": commit, "grounded_sam_modified": bool(dirty)}


def summarize(values: list[float]) -> dict[str, float]:
    """Median, min and max of timings (seconds); NaN when there are none."""
    if not values:
        nan = float("nan")
        return {"median": nan, "min": nan, "max": nan, "n": 0}
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


def fmt_seconds(value: float) -> str:
    """Seconds with a precision that suits their size."""
    if value != value:  # NaN
        return "n/a"
    if value < 0.1:
        return f"{value * 1000:.1f} ms"
    if value < 10:
        return f"{value:.2f} s"
    return f"{value:.1f} s"
