"""A browser tab's state and its image: uploads, indexing through the app's shared store.

Every callback of the page takes the tab's :class:`Session` (kept by the page in a
``gr.State``, so each tab has its own) plus the engine and the widget values, and either
returns what the page shows or raises :class:`UserError` with a message for the user.

What is shared, and what is safe to share: the indexes are not kept by the sessions but by one
:class:`~grounded_sam.grounding.store.IndexStore` that all the page's sessions share (made by
:func:`grounded_sam.app.ui.build_app`, bounded by bytes); a session holds the digest of its
image's pixels as the key. The same picture opened in two tabs is indexed once, and an index
evicted to stay within the bound is built again the next time its session needs it. Indexes
and the store are thread-safe (see :mod:`grounded_sam.grounding.index` and
:mod:`grounded_sam.grounding.store`); a session's own fields (prompts, result, export files)
are guarded by its lock. The engine's model calls are what the page still serialises (gradio's
``concurrency_limit``, see :mod:`grounded_sam.app.server`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from copy import deepcopy
from dataclasses import InitVar, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import supervision as sv
from PIL import Image, UnidentifiedImageError

from grounded_sam.grounding.store import DEFAULT_MAX_BYTES, IndexStore
from grounded_sam.inputs import load_image
from grounded_sam.utils.progress import StageProgress

if TYPE_CHECKING:
    from grounded_sam.grounding.index import ImageIndex
    from grounded_sam.pipeline import GroundedSAM

__all__ = [
    "EMPTY_PHRASE",
    "MAX_IMAGE_SIDE",
    "MAX_UPLOAD_BYTES",
    "MAX_UPLOAD_SIZE",
    "NO_IMAGE",
    "ExportFiles",
    "Result",
    "Session",
    "UserError",
    "clear_image",
    "index_markdown",
    "md",
    "open_upload",
    "session_index",
    "set_image",
]

logger = logging.getLogger(__name__)

#: Largest accepted image side in pixels (larger images are refused with a message).
MAX_IMAGE_SIDE = 4096
#: Largest accepted upload (gradio refuses larger files before they reach the app).
MAX_UPLOAD_SIZE = "20mb"
MAX_UPLOAD_BYTES = 20 * 1024 * 1024

NO_IMAGE = "No image yet: upload an image or pick one of the examples first."
EMPTY_PHRASE = "Type at least one phrase, e.g. 'dog' or 'date, fig, hazelnut'."


class UserError(Exception):
    """Something the user can fix; the message is shown on the page as is."""



@dataclass(frozen=True)
class Result:
    """One answer shown on the page (replaced as a whole, never mutated).

    Attributes:
        image: (H, W, 3) uint8 RGB image the detections belong to.
        dets: Detections (masks at the image size).
        kind: ``"text"`` (phrases) or ``"prompt"`` (SAM point/box prompt).
        prompt: The text as typed (text results) or a description of the prompt.
        phrases: Parsed phrases (``["prompt"]`` for SAM prompts).
        seconds: Time the engine took to answer.
    """

    image: np.ndarray
    dets: sv.Detections
    kind: Literal["text", "prompt"]
    prompt: str
    phrases: list[str]
    seconds: float


@dataclass(frozen=True)
class ExportFiles:
    """Downloadable files of the current result (paths inside the session's temp folder)."""

    masks_zip: Path
    overlay_png: Path
    json: Path



@dataclass
class Session:
    """Everything one browser tab has: its image, its index's key, its result and its prompts.

    Held by the page in a ``gr.State`` (one per tab); the tabs share only the index store.

    Args:
        store: Where the index is kept: the page's shared store. None gives the session a
            private store (scripts and tests); ``gr.State``'s copies of the page's initial
            session share the page's store.

    Attributes:
        image: (H, W, 3) uint8 RGB image of this tab, or None.
        name: File name the image was uploaded with (used in export names; never a path).
        key: Digest of the image pixels: the key of its index in the store (the same picture
            again, in this tab or another, reuses the index).
        index_builds: How many times an index was built for this tab.
        index_seconds: Time the last index build took.
        result: What the page shows now.
        points: Point prompts ``(x, y, label)``, label 1 foreground / 0 background.
        box_start: First corner of a box being drawn.
        box: The box prompt (x1, y1, x2, y2), or None.
        prompt_logits: (1, L, L) low-res logits of the last SAM prompt mask (fed back when
            the next point is added, as in SAM's interactive demo).
        upload: The last upload the page handled (gradio can report one upload twice).
        workdir: Temp folder for this tab's export files (deleted with the session).
        exported: The result and settings the files in ``workdir`` were written for.
        grounds_text: The engine grounds text itself (SAM 3): its index holds vision
            features, not candidate regions.
    """

    image: np.ndarray | None = None
    name: str = "image"
    key: str | None = None
    index_builds: int = 0
    index_seconds: float = 0.0
    result: Result | None = None
    points: list[tuple[float, float, int]] = field(default_factory=list)
    box_start: tuple[float, float] | None = None
    box: tuple[float, float, float, float] | None = None
    prompt_logits: np.ndarray | None = None
    upload: str | None = None
    workdir: Path | None = None
    grounds_text: bool = False
    exported: tuple[Result, tuple, ExportFiles] | None = None
    store: InitVar[IndexStore | None] = None

    def __post_init__(self, store: IndexStore | None) -> None:
        # Not dataclass fields: gradio serialises a State's initial value with asdict().
        self.lock = threading.Lock()
        self.store = store if store is not None else IndexStore(DEFAULT_MAX_BYTES)

    @property
    def index(self) -> ImageIndex | None:
        """The image's index when the store has it (None: no image, or evicted)."""
        return None if self.key is None else self.store.get(self.key)

    def __deepcopy__(self, memo: dict) -> Session:
        # gr.State deep-copies its initial (empty) value once per tab. Copy every field; the
        # copy gets its own lock and its own export folder, and shares the index store.
        twin = Session(store=self.store)
        for name in self.__dataclass_fields__:
            if name not in ("workdir", "exported", "store"):
                setattr(twin, name, deepcopy(getattr(self, name), memo))
        return twin

    def reset_prompts(self) -> None:
        """Forget point and box prompts."""
        self.points = []
        self.box_start = None
        self.box = None
        self.prompt_logits = None

    def close(self) -> None:
        """Delete this session's export files (called when the tab's state is dropped)."""
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def export_dir(self) -> Path:
        """This session's private temp folder for export files (created on first use)."""
        if self.workdir is None or not self.workdir.is_dir():
            self.workdir = Path(tempfile.mkdtemp(prefix="grounded_sam_app_"))
        return self.workdir


# -- image -------------------------------------------------------------------------------


def open_upload(
    path: str | os.PathLike | None, *, max_side: int = MAX_IMAGE_SIDE
) -> tuple[np.ndarray, str]:
    """Read an uploaded image (a file in gradio's upload cache) with clear errors.

    Args:
        path: The file gradio stored the upload in, or None when nothing was uploaded.
        max_side: Largest accepted width or height in pixels.

    Returns:
        ``(image, name)``: (H, W, 3) uint8 RGB and the upload's file name (display only).

    Raises:
        UserError: No image, not a readable image, or larger than ``max_side``.
    """
    if path is None or str(path) == "":
        raise UserError(NO_IMAGE)
    path = Path(path)
    name = path.name
    try:
        with Image.open(path) as probe:
            width, height = probe.size
    except Image.DecompressionBombError:
        raise UserError(
            f"'{name}' has too many pixels to decode safely (a decompression bomb, or a huge "
            f"image); the limit is {max_side} px on the longer side."
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise UserError(
            f"Could not read '{name}' as an image. Upload a JPEG, PNG, WebP, BMP, GIF or TIFF file."
        ) from None
    if max(width, height) > max_side:
        raise UserError(
            f"'{name}' is {width}×{height} px; the limit is {max_side} px on the longer side. "
            "Downscale it and upload it again."
        )
    try:
        image = load_image(path)
    except (ValueError, OSError) as exc:
        raise UserError(f"Could not read '{name}' as an image: {_plain(exc, path)}") from None
    return image, name


def _plain(exc: BaseException, path: Path) -> str:
    """An exception message without the server-side path of the upload."""
    return str(exc).replace(str(path), "the file")


def _digest(image: np.ndarray) -> str:
    h = hashlib.sha1(usedforsecurity=False)
    h.update(repr(image.shape).encode())
    h.update(np.ascontiguousarray(image).data)
    return h.hexdigest()


def set_image(
    session: Session,
    gs: GroundedSAM,
    path: str | os.PathLike | None,
    *,
    max_side: int = MAX_IMAGE_SIDE,
    on_stage: Callable[[str], None] | None = None,
) -> str:
    """Load a new image into the session and index it (once: the same picture is reused).

    The index is looked up in the session's store by the digest of the pixels, so a picture
    indexed before (by this tab or another tab of the page) is not indexed again.

    Args:
        session: The tab's session (updated in place).
        gs: The engine.
        path: Upload path from gradio (see :func:`open_upload`).
        max_side: Largest accepted image side.
        on_stage: Called with each indexing stage's name as it starts ("SAM encoder",
            "proposals", "CLIP regions"), for the page's progress indicator.

    Returns:
        Markdown describing the index (size, regions, time, builds in this session).

    Raises:
        UserError: See :func:`open_upload`; or the index is larger than the store's bound.
    """
    image, name = open_upload(path, max_side=max_side)
    key = _digest(image)
    with session.lock:
        same = session.key == key
        _, built = _index_into(session, gs, image, key, on_stage)
        session.image = image
        session.name = name
        session.grounds_text = bool(getattr(gs, "grounds_text", False))
        session.result = None
        session.reset_prompts()
        how = None if built else ("same picture as before" if same else "indexed before")
        return index_markdown(session, reused=not built, how=how)


def session_index(session: Session, gs: GroundedSAM) -> ImageIndex:
    """The session's index, built again when the store evicted it (caller holds the lock).

    Raises:
        UserError: No image yet, or the index is larger than the store's bound.
    """
    if session.image is None or session.key is None:
        raise UserError(NO_IMAGE)
    return _index_into(session, gs, session.image, session.key, None)[0]


def _index_into(
    session: Session,
    gs: GroundedSAM,
    image: np.ndarray,
    key: str,
    on_stage: Callable[[str], None] | None,
) -> tuple[ImageIndex, bool]:
    """Get or build the index of ``image`` in the session's store: ``(index, built)``."""

    def build() -> ImageIndex:
        t0 = time.perf_counter()
        index = gs.index(image, show_progress=StageProgress(False, on_stage=on_stage))
        session.index_seconds = time.perf_counter() - t0
        return index

    try:
        index, built = session.store.get_or_build(key, build)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    session.key = key
    if built:
        session.index_builds += 1
        logger.info("Session indexed an image (%d builds in this session)", session.index_builds)
    return index, built


def clear_image(session: Session) -> None:
    """Forget the session's image, index key, result and prompts (the image was removed).

    The index stays in the shared store (another tab may use it) until it is evicted.
    """
    with session.lock:
        session.image = None
        session.key = None
        session.result = None
        session.reset_prompts()


def index_markdown(session: Session, reused: bool = False, how: str | None = None) -> str:
    """One line about the session's index, including how often an index was built.

    Args:
        session: The tab's session.
        reused: The index was found in the store rather than built.
        how: What "reused" means here ("same picture as before", "indexed before").
    """
    index = session.index
    if session.image is None:
        return f"No image indexed yet. Indexes built in this session: {session.index_builds}."
    h, w = session.image.shape[:2]
    if index is None:
        return (
            f"**{md(session.name)}** ({w}×{h} px): its index was dropped from memory to make "
            "room for others; it is built again on the next query. "
            f"Indexes built in this session: {session.index_builds}."
        )
    n = len(index)
    what = (
        "SAM 3 vision features kept (SAM 3 grounds each phrase)"
        if session.grounds_text
        else f"{n} candidate region{'' if n == 1 else 's'}"
    )
    done = (
        f"{how or 'same picture as before'}, index reused"
        if reused
        else f"indexed in {session.index_seconds:.2f} s"
    )
    return (
        f"**{md(session.name)}** ({w}×{h} px): {what}, "
        f"{done}. "
        f"Indexes built in this session: {session.index_builds}."
    )


def md(text: str) -> str:
    """Escape text for a Markdown line."""
    out = []
    for ch in text:
        out.append("\\" + ch if ch in "\\`*_[]<>|~" else ch)
    return "".join(out)
