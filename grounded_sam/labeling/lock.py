"""An exclusive OS lock on a dataset folder, so that two labeling runs never interleave.

The lock is an ``fcntl.flock`` on ``DATASET_DIR/.grounded_sam.lock``; the operating system
drops it when the process ends, however it ends (Ctrl-C, SIGKILL, a crash), so a stale lock
cannot outlive its run. Where ``fcntl`` is missing (Windows) no lock is taken.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["LOCK_FILENAME", "DatasetBusyError", "dataset_lock"]

logger = logging.getLogger(__name__)

LOCK_FILENAME = ".grounded_sam.lock"
"""The lock file inside DATASET_DIR."""


class DatasetBusyError(OSError):
    """Another process is labeling or exporting into the same dataset folder."""


@contextmanager
def dataset_lock(out_dir: str | os.PathLike, wait: float = 0.0) -> Iterator[Path]:
    """Hold the exclusive lock of a dataset folder for the duration of the block.

    Args:
        out_dir: DATASET_DIR (created if missing).
        wait: Seconds to wait for another run to finish before giving up (0: fail at once).

    Yields:
        The lock file's path.

    Raises:
        DatasetBusyError: Another process holds the lock (the message names its pid and
            says what to do).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK_FILENAME
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield path
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + max(0.0, float(wait))
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
                    raise DatasetBusyError(
                        f"{out} is in use by another grounded-sam run (pid {holder}); wait for "
                        "it to finish, or write to another --out folder."
                    ) from None
                time.sleep(0.2)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield path
    finally:
        os.close(fd)  # releases the lock
