"""Atomic file writes: write a temporary file next to the target, then ``os.replace`` it.

A reader (or a resumed run) therefore sees either the old file or the complete new one,
never a half-written file, even if the process is killed mid-write.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

__all__ = [
    "atomic_copy",
    "atomic_write",
    "atomic_write_json",
    "atomic_write_png",
    "atomic_write_text",
    "safe_name",
]


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Run ``write(tmp_path)`` then move the temporary file onto ``path``.

    Args:
        path: Final location (its folder is created if missing).
        write: Writes the complete file to the path it is given.

    Returns:
        ``path`` as a ``Path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Atomically write UTF-8 text to ``path``."""
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = None) -> Path:
    """Atomically write ``obj`` as JSON (strict: no NaN/Infinity) to ``path``."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, allow_nan=False) + "\n")


def atomic_write_png(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Atomically write an (H, W) or (H, W, 3) uint8 array (RGB) as a PNG."""
    arr = np.ascontiguousarray(image)
    return atomic_write(path, lambda p: Image.fromarray(arr).save(p, format="PNG"))


def atomic_copy(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Atomically copy a file (contents and timestamps)."""
    return atomic_write(dst, lambda p: shutil.copy2(src, p))


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(text: str, max_len: int = 40) -> str:
    """A file-name-safe slug of ``text`` (``"red car/2"`` -> ``"red_car_2"``)."""
    slug = _UNSAFE.sub("_", text).strip("._")
    return slug[:max_len] or "x"
