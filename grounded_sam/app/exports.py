"""The current result as downloadable files: instance masks (zip), the overlay, the JSON.

Each session writes into its own folder under one per-process root
(:class:`ExportFolders`). A session's folder is deleted when gradio drops the session
(``Session.close``), and, since gradio does not always do so (a closed tab's state can
outlive it for hours), every export also sweeps the root: folders not written for
:data:`MAX_AGE_S` seconds and all but the :data:`MAX_FOLDERS` most recently written are
deleted (a session whose folder was swept simply writes its files again when asked; gradio
serves downloads from its own cache copy). The root itself is removed at exit.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
import threading
import time
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

from grounded_sam.app.render import render
from grounded_sam.app.session import ExportFiles, Session
from grounded_sam.export.files import atomic_write, atomic_write_json, atomic_write_png, safe_name
from grounded_sam.export.records import detections_to_json, save_instance_masks

if TYPE_CHECKING:
    from grounded_sam.pipeline import GroundedSAM

__all__ = ["MAX_AGE_S", "MAX_FOLDERS", "ExportFolders", "default_folders", "export_files"]

logger = logging.getLogger(__name__)

#: Seconds after its last export that a session's folder may be deleted (gradio's own
#: ``delete_cache`` of the page keeps files for 2 hours too).
MAX_AGE_S = 2 * 3600.0
#: Most session folders kept at once (the most recently written; the page keeps 64
#: sessions by default).
MAX_FOLDERS = 128


class ExportFolders:
    """One root folder holding each session's export folder, kept bounded.

    Args:
        root: The root (None: a new private temp folder, made on first use and removed at
            exit).
        max_age_s: Folders not written for longer are deleted by :meth:`sweep`.
        max_folders: :meth:`sweep` keeps at most this many folders (the newest).
    """

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        *,
        max_age_s: float = MAX_AGE_S,
        max_folders: int = MAX_FOLDERS,
    ) -> None:
        if max_folders < 1:
            raise ValueError(f"max_folders must be >= 1, got {max_folders}.")
        if not max_age_s > 0:
            raise ValueError(f"max_age_s must be > 0, got {max_age_s}.")
        self.max_age_s = float(max_age_s)
        self.max_folders = int(max_folders)
        self._root = None if root is None else Path(root)
        self._own_root = root is None
        self._lock = threading.Lock()

    @property
    def root(self) -> Path:
        """The root folder (created on first use)."""
        with self._lock:
            if self._root is None:
                self._root = Path(tempfile.mkdtemp(prefix="grounded_sam_app_"))
                atexit.register(self.close)
            self._root.mkdir(parents=True, exist_ok=True)
            return self._root

    def folder_for(self, session: Session) -> Path:
        """``session``'s export folder under :attr:`root` (made if missing), then a sweep."""
        root = self.root
        current = session.workdir
        if current is None or not current.is_dir() or current.parent != root:
            session.workdir = Path(tempfile.mkdtemp(prefix="session_", dir=root))
        os.utime(session.workdir)  # last written now: the sweep keeps it
        self.sweep(keep=session.workdir)
        return session.workdir

    def sweep(self, keep: Path | None = None, now: float | None = None) -> int:
        """Delete folders older than ``max_age_s`` and all but the ``max_folders`` newest.

        Args:
            keep: A folder never deleted (the one being written).
            now: The time to age folders against (default: now).

        Returns:
            How many folders were deleted.
        """
        now = time.time() if now is None else now
        aged = []
        for path in self.root.iterdir():
            try:
                if path.is_dir() and not path.is_symlink():
                    aged.append((path.stat().st_mtime, path))
            except OSError:  # deleted meanwhile
                continue
        aged.sort(reverse=True)  # newest first
        doomed = [
            path
            for rank, (mtime, path) in enumerate(aged)
            if path != keep and (rank >= self.max_folders or now - mtime > self.max_age_s)
        ]
        for path in doomed:
            shutil.rmtree(path, ignore_errors=True)
        if doomed:
            logger.info("Deleted %d old session export folder(s) in %s", len(doomed), self.root)
        return len(doomed)

    def close(self) -> None:
        """Delete the root with every session folder (when this object made the root)."""
        with self._lock:
            if self._root is not None and self._own_root:
                shutil.rmtree(self._root, ignore_errors=True)
                self._root = None


_default: ExportFolders | None = None
_default_lock = threading.Lock()


def default_folders(**settings: float) -> ExportFolders:
    """The process's :class:`ExportFolders` (made on first use).

    Args:
        **settings: ``max_age_s`` / ``max_folders``: change the bounds (the server sets
            them from its own session bound).
    """
    global _default
    with _default_lock:
        if _default is None:
            _default = ExportFolders()
        for name, value in settings.items():
            if name == "max_folders":
                if int(value) < 1:
                    raise ValueError(f"max_folders must be >= 1, got {value}.")
                _default.max_folders = int(value)
            elif name == "max_age_s":
                if not float(value) > 0:
                    raise ValueError(f"max_age_s must be > 0, got {value}.")
                _default.max_age_s = float(value)
            else:
                raise TypeError(f"Unknown export folder setting {name!r}.")
        return _default


def export_files(
    session: Session,
    gs: GroundedSAM,
    opacity: float = 0.5,
    folders: ExportFolders | None = None,
) -> ExportFiles | None:
    """Write the current result's exports into the session's private temp folder.

    Files: ``<stem>_masks.zip`` (one binary PNG per instance, 255 inside),
    ``<stem>_overlay.png`` (what the page shows) and ``<stem>.json`` (the CLI's schema, see
    :mod:`grounded_sam.export.records`).

    Args:
        session: The tab's session.
        gs: The engine (for the model names in the JSON).
        opacity: Mask opacity of the overlay PNG.
        folders: Where sessions' folders live (None: :func:`default_folders`); every call
            sweeps it (see the module docstring).

    Returns:
        The three paths, or None when there is no result.
    """
    result = session.result
    if result is None:
        return None
    key = (round(float(opacity), 4), tuple(session.points), session.box_start, session.box)
    cached = session.exported
    out = (folders or default_folders()).folder_for(session)
    if (
        cached is not None
        and cached[0] is result
        and cached[1] == key
        and all(p.is_file() for p in (cached[2].masks_zip, cached[2].overlay_png, cached[2].json))
    ):
        return cached[2]
    stem = safe_name(Path(session.name).stem or "image")
    overlay = render(session, opacity)
    if overlay is None:
        return None
    png = atomic_write_png(out / f"{stem}_overlay.png", overlay)
    h, w = result.image.shape[:2]
    doc = detections_to_json(
        result.dets,
        (h, w),
        image_path=session.name,
        prompt=result.prompt if result.kind == "text" else None,
        phrases=result.phrases,
        models={"sam": gs.model_ids[0], "clip": _clip_id(gs)},
    )
    js = atomic_write_json(out / f"{stem}.json", doc, indent=2)
    mask_dir = Path(tempfile.mkdtemp(prefix="masks_", dir=out))
    try:
        written = save_instance_masks(result.dets, mask_dir, stem)

        def _zip(tmp: Path) -> None:
            with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
                for p in written:
                    zf.write(p, arcname=p.name)

        zp = atomic_write(out / f"{stem}_masks.zip", _zip)
    finally:
        shutil.rmtree(mask_dir, ignore_errors=True)
    files = ExportFiles(masks_zip=zp, overlay_png=png, json=js)
    session.exported = (result, key, files)
    return files


def _clip_id(gs: GroundedSAM) -> str | None:
    """The engine's CLIP id; None when it grounds text itself (SAM 3 loads no CLIP)."""
    return None if getattr(gs, "grounds_text", False) else gs.model_ids[1]
