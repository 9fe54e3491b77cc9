"""Atomic file writes, and unique file names for the results of many images.

Writes go to a temporary file next to the target, then ``os.replace`` it: a reader (or a
resumed run) therefore sees either the old file or the complete new one, never a half-written
file, even if the process is killed mid-write. The file gets the permissions a plain ``open``
would give it (``0o666`` minus the umask; a copy: the source's mode minus the umask, as
``cp``), not the ``0o600`` of the temporary file.

:func:`flat_names` / :func:`flat_stems` give every image of a run its own output name (the
labeled dataset's ``images/`` and ``grounded-sam segment --out``), unique even when images
in different folders, or with different extensions, share a name.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import tempfile
import threading
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
    "current_umask",
    "flat_names",
    "flat_stems",
    "safe_name",
]


_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask, read without changing it where the system allows.

    Linux reports it in ``/proc/self/status``; elsewhere it is read by setting and restoring
    it, under a lock (another thread creating a file at that instant could still see 0o077).
    """
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o077)
        os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None], mode: int = 0o666) -> Path:
    """Run ``write(tmp_path)`` then move the temporary file onto ``path``.

    Args:
        path: Final location (its folder is created if missing).
        write: Writes the complete file to the path it is given.
        mode: Permission bits before the umask is applied (as for ``open``).

    Returns:
        ``path`` as a ``Path``; its permissions are ``mode & ~umask``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        os.chmod(tmp_path, mode & ~current_umask())  # mkstemp made it 0o600
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
    """Atomically copy a file (contents and timestamps; mode: the source's minus the umask)."""
    mode = stat.S_IMODE(os.stat(src).st_mode)
    return atomic_write(dst, lambda p: shutil.copy2(src, p), mode=mode)


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(text: str, max_len: int = 40) -> str:
    """A file-name-safe slug of ``text`` (``"red car/2"`` -> ``"red_car_2"``)."""
    slug = _UNSAFE.sub("_", text).strip("._")
    return slug[:max_len] or "x"


def flat_stems(rels: Sequence[str]) -> list[str]:
    """Unique, unambiguous flat file stems for files at relative posix paths ``rels``.

    Nested folders are joined with ``"__"``; control characters and undecodable bytes
    (surrogates) become ``"_"``. Every file keeps its own (flattened, cleaned) stem unless an
    earlier file has it (case-insensitively: ``a.jpg`` and ``A.png`` collide; top-level files
    come first, so a top-level file keeps its own stem unless an earlier top-level file has
    the same one). Only then does each file that lost its stem get the first free ``_1``,
    ``_2``, ..., never one that another file owns: ``a.jpg, a.png, a_1.jpg`` give ``a, a_2,
    a_1`` (``a_1.jpg``'s results are ``a_1.*``, not ``a.png``'s).

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
    pending = []
    for i in order:  # every file whose own stem is free keeps it...
        stem, suffix, _ = cleaned[i]
        if stem.lower() in used:
            pending.append(i)
        else:
            used.add(stem.lower())
            out[i] = (stem, suffix)
    for i in pending:  # ...then the others get the first free "_1", "_2", ...
        stem, suffix, _ = cleaned[i]
        k = 1
        while f"{stem}_{k}".lower() in used:
            k += 1
        used.add(f"{stem}_{k}".lower())
        out[i] = (f"{stem}_{k}", suffix)
    return out


def _clean_name(text: str) -> str:
    """``text`` with control characters and lone surrogates replaced by ``"_"``."""
    return "".join("_" if unicodedata.category(c) in ("Cc", "Cs") else c for c in text)
