"""Atomic file writes, and unique file names for the results of many images.

Writes go to a temporary file next to the target, then ``os.replace`` it: a reader (or a
resumed run) therefore sees either the old file or the complete new one, never a half-written
file, even if the process is killed mid-write.

:func:`flat_names` / :func:`flat_stems` give every image of a run its own output name (the
labeled dataset's ``images/`` and ``grounded-sam segment --out``), unique even when images
in different folders, or with different extensions, share a name.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import unicodedata
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from PIL import Image

__all__ = [
    "atomic_copy",
    "atomic_write",
    "atomic_write_json",
    "atomic_write_png",
    "atomic_write_text",
    "flat_names",
    "flat_stems",
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


def flat_stems(rels: Sequence[str]) -> list[str]:
    """Unique, unambiguous flat file stems for files at relative posix paths ``rels``.

    Nested folders are joined with ``"__"``; control characters and undecodable bytes
    (surrogates) become ``"_"``. Top-level names are reserved first (a top-level file keeps
    its own, cleaned stem unless an earlier top-level file has the same stem), then every
    name that collides with one already taken (case-insensitively: ``a.jpg`` and ``A.png``
    collide) gets ``_1``, ``_2``, ... until it is free.

    Args:
        rels: Relative paths such as ``"sub/a.jpg"`` (give ``Path(p).name`` to ignore
            folders).

    Returns:
        One stem per path, in the same order, no two equal case-insensitively (so results
        named ``stem + ".json"``, ``stem + ".txt"``, ... never overwrite each other).
    """
    return [stem for stem, _ in _flat(rels)]


def flat_names(rels: Sequence[str]) -> list[str]:
    """:func:`flat_stems` with each file's extension (``"sub/a.jpg"`` -> ``"sub__a.jpg"``)."""
    return [stem + suffix for stem, suffix in _flat(rels)]


def _flat(rels: Sequence[str]) -> list[tuple[str, str]]:
    cleaned = []
    for rel in rels:
        p = PurePosixPath(rel)
        stem = "__".join([*p.parent.parts, p.stem]) if p.parent.parts else p.stem
        clean = _clean_name(stem)
        cleaned.append((clean, _clean_name(p.suffix), not p.parent.parts and clean == stem))
    used: set[str] = set()
    out = [("", "")] * len(cleaned)
    order = sorted(range(len(cleaned)), key=lambda i: not cleaned[i][2])  # top level first
    for i in order:
        stem, suffix, _ = cleaned[i]
        candidate, k = stem, 1
        while candidate.lower() in used:
            candidate = f"{stem}_{k}"
            k += 1
        used.add(candidate.lower())
        out[i] = (candidate, suffix)
    return out


def _clean_name(text: str) -> str:
    """``text`` with control characters and lone surrogates replaced by ``"_"``."""
    return "".join("_" if unicodedata.category(c) in ("Cc", "Cs") else c for c in text)
