"""The logic behind the web page, as plain Python (no gradio import): unit-testable.

Every function takes the browser tab's :class:`Session` (kept by the page in a ``gr.State``,
so each tab has its own; nothing here is global) plus the engine and the widget values, and
either returns what the page shows or raises :class:`UserError` with a message for the user.
:mod:`grounded_sam.app.ui` turns those into gradio outputs and ``gr.Error`` / ``gr.Info``.

The image is indexed once (:meth:`grounded_sam.GroundedSAM.index`) when it is uploaded or
picked; phrases, threshold changes and point/box prompts are answered from that index.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable
from copy import deepcopy
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import cv2
import numpy as np
import supervision as sv
from PIL import Image, UnidentifiedImageError

from grounded_sam.export.annotate import annotate_detections
from grounded_sam.export.files import atomic_write, atomic_write_json, atomic_write_png, safe_name
from grounded_sam.export.records import detections_to_json, save_instance_masks
from grounded_sam.grounding.candidates import parse_negatives
from grounded_sam.grounding.index import ImageIndex
from grounded_sam.inputs import check_int, check_number, load_image, parse_prompt
from grounded_sam.limits import MAX_TOP_K
from grounded_sam.utils.progress import StageProgress

if TYPE_CHECKING:
    from grounded_sam.pipeline import GroundedSAM

__all__ = [
    "CLICK_MODES",
    "SIMILAR_LABEL",
    "MAX_IMAGE_SIDE",
    "MAX_UPLOAD_BYTES",
    "MAX_UPLOAD_SIZE",
    "REFINEMENT_LEVELS",
    "TABLE_HEADERS",
    "ExportFiles",
    "RefinementLevel",
    "Result",
    "Session",
    "UserError",
    "click",
    "clear_image",
    "clear_prompts",
    "describe_region",
    "describe_row",
    "export_files",
    "models_markdown",
    "open_upload",
    "refinement_params",
    "region_table",
    "render",
    "set_image",
    "text_query",
]

logger = logging.getLogger(__name__)

#: Largest accepted image side in pixels (larger images are refused with a message).
MAX_IMAGE_SIDE = 4096
#: Largest accepted upload (gradio refuses larger files before they reach the app).
MAX_UPLOAD_SIZE = "20mb"
MAX_UPLOAD_BYTES = 20 * 1024 * 1024

NO_IMAGE = "No image yet: upload an image or pick one of the examples first."
EMPTY_PHRASE = "Type at least one phrase, e.g. 'dog' or 'date, fig, hazelnut'."

TABLE_HEADERS = [
    "#",
    "label",
    "confidence",
    "CLIP score",
    "SAM IoU",
    "box (x1, y1, x2, y2)",
    "area (px)",
]

ClickMode = Literal[
    "Inspect region", "Foreground point", "Background point", "Box corners", "Find similar"
]
#: What a click on the result image does.
CLICK_MODES: tuple[str, ...] = (
    "Inspect region",
    "Foreground point",
    "Background point",
    "Box corners",
    "Find similar",
)
#: Class name of the regions found by "Find similar".
SIMILAR_LABEL = "similar"


class UserError(Exception):
    """Something the user can fix; the message is shown on the page as is."""


@dataclass(frozen=True)
class RefinementLevel:
    """How final masks are refined (one entry of :data:`REFINEMENT_LEVELS`).

    Attributes:
        refine: Extra SAM decoder passes that feed a mask's own low-res logits back with its
            box prompt (the engine's ``refine``).
        min_region_fraction: Islands and holes smaller than this fraction of the image's
            pixels are removed from each final mask (the engine's ``min_region_area``).
        description: One line for the page.
    """

    refine: int
    min_region_fraction: float
    description: str


REFINEMENT_LEVELS: dict[str, RefinementLevel] = {
    "low": RefinementLevel(0, 0.0, "box prompt only, no clean-up (fastest)"),
    "medium": RefinementLevel(1, 0.0005, "1 refinement pass, specks < 0.05% removed"),
    "high": RefinementLevel(2, 0.002, "2 refinement passes, specks < 0.2% removed"),
}


def refinement_params(level: str, image_size: tuple[int, int]) -> tuple[int, int]:
    """The engine's ``(refine, min_region_area)`` for a refinement level and image size.

    Args:
        level: ``"low"``, ``"medium"`` or ``"high"``.
        image_size: (H, W) of the image.

    Returns:
        ``refine`` passes and ``min_region_area`` in pixels.

    Raises:
        UserError: Unknown level.
    """
    try:
        spec = REFINEMENT_LEVELS[str(level).lower()]
    except KeyError:
        raise UserError(
            f"Unknown refinement level {level!r}; choose one of {', '.join(REFINEMENT_LEVELS)}."
        ) from None
    h, w = image_size
    return spec.refine, int(round(spec.min_region_fraction * h * w))


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
    """Everything one browser tab has: its image, its index, its result and its prompts.

    Held by the page in a ``gr.State`` (one per tab); never shared between tabs.

    Attributes:
        image: (H, W, 3) uint8 RGB image of this tab, or None.
        name: File name the image was uploaded with (used in export names; never a path).
        key: Digest of the image pixels (the same picture again reuses the index).
        index: The image's :class:`~grounded_sam.ImageIndex`.
        index_builds: How many times an index was built in this tab.
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
    """

    image: np.ndarray | None = None
    name: str = "image"
    key: str | None = None
    index: ImageIndex | None = None
    index_builds: int = 0
    index_seconds: float = 0.0
    result: Result | None = None
    points: list[tuple[float, float, int]] = field(default_factory=list)
    box_start: tuple[float, float] | None = None
    box: tuple[float, float, float, float] | None = None
    prompt_logits: np.ndarray | None = None
    upload: str | None = None
    workdir: Path | None = None
    exported: tuple[Result, tuple, ExportFiles] | None = None

    def __post_init__(self) -> None:
        # Not a dataclass field: gradio serialises a State's initial value with asdict().
        self.lock = threading.Lock()

    def __deepcopy__(self, memo: dict) -> Session:
        # gr.State deep-copies its initial (empty) value once per tab. Copy every field; the
        # copy gets its own lock and its own export folder: tabs share nothing.
        twin = Session()
        for name in self.__dataclass_fields__:
            if name not in ("workdir", "exported"):
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
        UserError: See :func:`open_upload`.
    """
    image, name = open_upload(path, max_side=max_side)
    key = _digest(image)
    with session.lock:
        reused = session.key == key and session.index is not None
        if not reused:
            t0 = time.perf_counter()
            index = gs.index(image, show_progress=StageProgress(False, on_stage=on_stage))
            seconds = time.perf_counter() - t0
            session.index = index
            session.index_seconds = seconds
            session.index_builds += 1
            session.key = key
            logger.info(
                "Session indexed %s (%d builds in this session)", name, session.index_builds
            )
        session.image = image
        session.name = name
        session.result = None
        session.reset_prompts()
        return index_markdown(session, reused=reused)


def clear_image(session: Session) -> None:
    """Forget the session's image, index, result and prompts (the image was removed)."""
    with session.lock:
        session.image = None
        session.index = None
        session.key = None
        session.result = None
        session.reset_prompts()


def index_markdown(session: Session, reused: bool = False) -> str:
    """One line about the session's index, including how often an index was built."""
    if session.index is None or session.image is None:
        return f"No image indexed yet. Indexes built in this session: {session.index_builds}."
    h, w = session.image.shape[:2]
    n = len(session.index)
    how = (
        "same picture as before, index reused"
        if reused
        else f"indexed in {session.index_seconds:.2f} s"
    )
    return (
        f"**{_md(session.name)}** ({w}×{h} px): {n} candidate region{'' if n == 1 else 's'}, "
        f"{how}. "
        f"Indexes built in this session: {session.index_builds}."
    )


def _md(text: str) -> str:
    """Escape text for a Markdown line."""
    out = []
    for ch in text:
        out.append("\\" + ch if ch in "\\`*_[]<>|~" else ch)
    return "".join(out)


# -- text prompts ----------------------------------------------------------------------------


def _top_k(top_k: float | None) -> int | None:
    """The Top-K slider's value: None for no limit (None or 0), else an int in 1..MAX_TOP_K.

    Raises:
        UserError: Out of range or not a whole number.
    """
    if isinstance(top_k, float) and top_k.is_integer():
        top_k = int(top_k)  # sliders send floats
    try:
        return None if top_k in (None, 0) else check_int("Top-K", top_k, 1, MAX_TOP_K)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def text_query(
    session: Session,
    gs: GroundedSAM,
    prompt: str | None,
    threshold: float,
    level: str = "medium",
    top_k: int | None = None,
    negative: str | None = None,
) -> str:
    """Answer a comma-separated text prompt from the session's index.

    Args:
        session: The tab's session (its ``result`` is replaced).
        gs: The engine.
        prompt: Phrases as typed.
        threshold: Minimum confidence in [0, 1].
        level: Refinement level (see :data:`REFINEMENT_LEVELS`).
        top_k: At most this many regions per phrase (None or 0: no limit).
        negative: Comma-separated phrases to exclude (a region that best matches one of
            them is not shown), or None.

    Returns:
        Markdown status line: what was found and how long the answer took, or
        "No region matched ..." when nothing passed the threshold (not an error).

    Raises:
        UserError: No image, an empty prompt, or a value out of range.
    """
    if session.index is None or session.image is None:
        raise UserError(NO_IMAGE)
    if prompt is None or not str(prompt).replace(",", " ").strip():
        raise UserError(EMPTY_PHRASE)
    try:
        phrases = parse_prompt(str(prompt))
    except TypeError:
        raise UserError(EMPTY_PHRASE) from None
    except ValueError as exc:
        raise UserError(str(exc)) from None
    try:
        threshold = check_number("The threshold", threshold, 0.0, 1.0)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    k = _top_k(top_k)
    negatives = _negatives(negative, phrases)
    with session.lock:
        index, image = session.index, session.image
        refine, min_area = refinement_params(level, index.size)
        t0 = time.perf_counter()
        dets = gs.query(
            index,
            phrases,
            threshold=threshold,
            top_k=k,
            refine=refine,
            min_region_area=min_area,
            negative=negatives or None,
        )
        seconds = time.perf_counter() - t0
        session.result = Result(image, dets, "text", str(prompt), phrases, seconds)
        session.reset_prompts()
    quoted = ", ".join(f"'{_md(p)}'" for p in phrases)
    if len(dets) == 0:
        return (
            f"No region matched {quoted} at threshold {threshold:.2f} "
            f"(answered from the cached index in {seconds * 1000:.0f} ms). Try a lower "
            "threshold or another phrase."
        )
    counts = ", ".join(
        f"{_md(p)}: {int((dets.class_id == i).sum())}" for i, p in enumerate(phrases)
    )
    return (
        f"Found {len(dets)} region{'s' if len(dets) != 1 else ''} for {quoted} ({counts}) "
        f"in {seconds * 1000:.0f} ms from the cached index (no re-indexing)."
    )


def _negatives(negative: str | None, phrases: list[str]) -> list[str]:
    """Parsed negative phrases (empty for none), as a UserError when unusable."""
    try:
        return parse_negatives(negative, phrases)
    except (ValueError, TypeError) as exc:
        raise UserError(f"Negative phrases: {exc}") from None


def _find_similar(
    session: Session,
    gs: GroundedSAM,
    box: tuple[float, float, float, float],
    threshold: float | None = None,
    top_k: int | None = None,
    negative: str | None = None,
) -> str:
    """Find similar: every region like the one in ``box`` (caller holds the lock).

    Args:
        session: The tab's session (its ``result`` is replaced).
        gs: The engine.
        box: (x1, y1, x2, y2) around an example object, original pixels.
        threshold: Minimum confidence (None: the engine's).
        top_k: At most this many regions (None or 0: no limit).
        negative: Comma-separated phrases to exclude, or None.

    Returns:
        Markdown status line.

    Raises:
        UserError: No image, or an unusable box or negative phrase.
    """
    if session.index is None or session.image is None:
        raise UserError(NO_IMAGE)
    negatives = _negatives(negative, [])
    try:
        if threshold is not None:
            threshold = check_number("The threshold", threshold, 0.0, 1.0)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    k = _top_k(top_k)
    index, image = session.index, session.image
    t0 = time.perf_counter()
    try:
        dets = gs.query(
            index,
            exemplars=[list(box)],
            exemplar_label=SIMILAR_LABEL,
            threshold=threshold,
            top_k=k,
            negative=negatives or None,
        )
    except ValueError as exc:
        raise UserError(str(exc)) from None
    seconds = time.perf_counter() - t0
    x1, y1, x2, y2 = box
    described = f"similar to box ({x1:.0f}, {y1:.0f}, {x2:.0f}, {y2:.0f})"
    session.result = Result(image, dets, "text", described, [SIMILAR_LABEL], seconds)
    session.reset_prompts()
    return (
        f"Found {len(dets)} region{'s' if len(dets) != 1 else ''} {described} in "
        f"{seconds * 1000:.0f} ms from the cached index (CLIP image similarity to the boxed "
        "region)."
    )


# -- point / box prompts ---------------------------------------------------------------------


def click(
    session: Session,
    gs: GroundedSAM,
    x: float,
    y: float,
    mode: str,
    *,
    threshold: float | None = None,
    top_k: int | None = None,
    negative: str | None = None,
) -> tuple[str, bool]:
    """Handle a click on the result image.

    In ``"Inspect region"`` mode the region under the click is described; in the other
    modes the click adds a foreground/background point or a box corner and SAM segments
    from all current point/box prompts, on the session's cached image embedding. In
    ``"Find similar"`` mode two clicks (opposite corners) box an example object and every
    region that looks like it is shown (``threshold``, ``top_k`` and ``negative`` apply).

    Args:
        session: The tab's session.
        gs: The engine.
        x: Click column in original image pixels.
        y: Click row in original image pixels.
        mode: One of :data:`CLICK_MODES`.
        threshold: Minimum confidence of "Find similar" (None: the engine's).
        top_k: At most this many "Find similar" regions (None or 0: no limit).
        negative: Comma-separated phrases "Find similar" must not return, or None.

    Returns:
        ``(markdown, changed)``: the message to show, and whether the result changed (the
        overlay and table need redrawing).

    Raises:
        UserError: No image, or an unusable prompt.
    """
    if session.index is None or session.image is None:
        raise UserError(NO_IMAGE)
    if mode not in CLICK_MODES:
        raise UserError(f"Unknown click mode {mode!r}; choose one of {', '.join(CLICK_MODES)}.")
    h, w = session.image.shape[:2]
    x = float(min(max(x, 0), w - 1))
    y = float(min(max(y, 0), h - 1))
    if mode == "Inspect region":
        return describe_region(session, x, y), False
    with session.lock:
        if mode in ("Box corners", "Find similar"):
            if session.box_start is None:
                session.box_start = (x, y)
                return (
                    f"Box corner set at ({x:.0f}, {y:.0f}); click the opposite corner.",
                    True,
                )
            (x0, y0), session.box_start = session.box_start, None
            x1, x2 = sorted((x0, x))
            y1, y2 = sorted((y0, y))
            if x2 - x1 < 2 or y2 - y1 < 2:
                raise UserError(
                    "The two box corners are too close together; click two opposite corners "
                    "of the object."
                )
            if mode == "Find similar":
                return _find_similar(
                    session, gs, (x1, y1, x2 + 1, y2 + 1), threshold, top_k, negative
                ), True
            session.box = (x1, y1, x2 + 1, y2 + 1)
            session.prompt_logits = None
        else:
            session.points.append((x, y, 1 if mode == "Foreground point" else 0))
        return _predict(session, gs), True


def clear_prompts(session: Session) -> str:
    """Forget point/box prompts and the SAM prompt result (text results are kept)."""
    with session.lock:
        session.reset_prompts()
        if session.result is not None and session.result.kind == "prompt":
            session.result = None
    return "Point and box prompts cleared."


def _predict(session: Session, gs: GroundedSAM) -> str:
    """Run SAM on the session's point/box prompts (caller holds the lock)."""
    index = session.index
    if index is None or session.image is None:
        raise UserError(NO_IMAGE)
    points = np.array([(px, py) for px, py, _ in session.points], dtype=np.float32)
    labels = np.array([lab for _, _, lab in session.points], dtype=np.int64)
    single_point = len(points) == 1 and session.box is None
    t0 = time.perf_counter()
    try:
        dets = gs.predict(
            index,
            points=points if len(points) else None,
            labels=labels if len(points) else None,
            box=None if session.box is None else np.array(session.box, dtype=np.float32),
            mask_input=None if single_point else session.prompt_logits,
            multimask_output=single_point,
        )
    except ValueError as exc:
        session.reset_prompts()
        raise UserError(f"SAM could not use these prompts: {exc}") from None
    seconds = time.perf_counter() - t0
    if len(dets) > 1:  # multimask output: keep SAM's best guess
        dets = dets[[int(np.argmax(dets.data["sam_iou"]))]]
    session.prompt_logits = np.asarray(dets.data["low_res_logits"][:1], dtype=np.float32)
    n_fg, n_bg = int((labels == 1).sum()), int((labels == 0).sum())
    parts = []
    if n_fg:
        parts.append(f"{n_fg} foreground point{'s' if n_fg != 1 else ''}")
    if n_bg:
        parts.append(f"{n_bg} background point{'s' if n_bg != 1 else ''}")
    if session.box is not None:
        parts.append("a box")
    what = " + ".join(parts)
    session.result = Result(session.image, dets, "prompt", what, ["prompt"], seconds)
    iou = float(dets.data["sam_iou"][0]) if len(dets) else float("nan")
    area = int(dets.mask[0].sum()) if len(dets) and dets.mask is not None else 0
    return (
        f"SAM mask from {what} in {seconds * 1000:.0f} ms on the cached embedding "
        f"(no re-indexing): SAM IoU {iou:.2f}, {area} px."
    )


# -- what the page shows ---------------------------------------------------------------------


def render(session: Session, opacity: float = 0.5) -> np.ndarray | None:
    """The image with the current result and prompts drawn on it.

    Args:
        session: The tab's session.
        opacity: Mask fill opacity in [0, 1].

    Returns:
        (H, W, 3) uint8 RGB, or None without an image.
    """
    result = session.result
    image = result.image if result is not None else session.image
    if image is None:
        return None
    opacity = float(min(max(float(opacity), 0.0), 1.0))
    if result is not None:
        out = annotate_detections(image, result.dets, opacity=opacity)
    else:
        out = image.copy()
    return _draw_prompts(out, session)


def _draw_prompts(canvas: np.ndarray, session: Session) -> np.ndarray:
    h, w = canvas.shape[:2]
    radius = max(5, round(max(h, w) / 90))
    thick = max(2, radius // 3)
    canvas = np.ascontiguousarray(canvas)
    if session.box is not None:
        x1, y1, x2, y2 = (round(v) for v in session.box)
        cv2.rectangle(canvas, (x1, y1), (x2 - 1, y2 - 1), (255, 255, 0), thick)
    if session.box_start is not None:
        bx, by = (round(v) for v in session.box_start)
        cv2.drawMarker(canvas, (bx, by), (255, 255, 0), cv2.MARKER_CROSS, radius * 3, thick)
    for px, py, lab in session.points:
        color = (0, 220, 0) if lab == 1 else (230, 0, 0)
        center = (round(px), round(py))
        cv2.circle(canvas, center, radius, color, -1, cv2.LINE_AA)
        cv2.circle(canvas, center, radius, (255, 255, 255), max(1, thick // 2), cv2.LINE_AA)
    return canvas


def region_table(session: Session) -> list[list]:
    """Rows of the regions table (see :data:`TABLE_HEADERS`), one per detection."""
    result = session.result
    if result is None or len(result.dets) == 0:
        return []
    dets = result.dets
    names = dets.data.get("class_name", [])
    clip = dets.data.get("clip_score")
    iou = dets.data.get("sam_iou")
    areas = dets.mask.reshape(len(dets), -1).sum(1) if dets.mask is not None else None
    rows = []
    for i in range(len(dets)):
        box = ", ".join(str(round(float(v))) for v in dets.xyxy[i])
        rows.append(
            [
                i,
                str(names[i]) if len(names) else "",
                _num(dets.confidence[i] if dets.confidence is not None else None),
                _num(clip[i] if clip is not None else None),
                _num(iou[i] if iou is not None else None),
                box,
                int(areas[i]) if areas is not None else 0,
            ]
        )
    return rows


def _num(value: object) -> float | str:
    if value is None:
        return ""
    v = float(value)  # type: ignore[arg-type]
    return round(v, 3) if np.isfinite(v) else ""


def _region_text(dets: sv.Detections, i: int) -> str:
    name = str(dets.data["class_name"][i]) if "class_name" in dets.data else f"#{i}"
    conf = float(dets.confidence[i]) if dets.confidence is not None else float("nan")
    clip = float(dets.data["clip_score"][i]) if "clip_score" in dets.data else float("nan")
    iou = float(dets.data["sam_iou"][i]) if "sam_iou" in dets.data else float("nan")
    area = int(dets.mask[i].sum()) if dets.mask is not None else 0
    box = ", ".join(str(round(float(v))) for v in dets.xyxy[i])
    clip_txt = f"{clip:.3f}" if np.isfinite(clip) else "n/a (SAM prompt)"
    return (
        f"**{_md(name)}** (region #{i}): confidence {conf:.3f} · CLIP score {clip_txt} · "
        f"SAM IoU {iou:.3f} · box [{box}] · {area} px"
    )


def describe_region(session: Session, x: float, y: float) -> str:
    """Markdown about the region under a point: label, confidence, CLIP score, SAM IoU.

    Where regions overlap, the smallest one containing the point is described.
    """
    result = session.result
    if result is None or len(result.dets) == 0 or result.dets.mask is None:
        return "No result to inspect yet: type a phrase first."
    h, w = result.image.shape[:2]
    xi, yi = int(min(max(x, 0), w - 1)), int(min(max(y, 0), h - 1))
    masks = result.dets.mask
    hits = np.flatnonzero(masks[:, yi, xi])
    if len(hits) == 0:
        return f"No region at ({xi}, {yi})."
    areas = masks[hits].reshape(len(hits), -1).sum(1)
    best = int(hits[int(np.argmin(areas))])
    more = f" ({len(hits)} regions overlap here)" if len(hits) > 1 else ""
    return f"At ({xi}, {yi}): " + _region_text(result.dets, best) + more


def describe_row(session: Session, row: int) -> str:
    """Markdown about one row of the regions table."""
    result = session.result
    if result is None or not 0 <= int(row) < len(result.dets):
        return "No such region."
    return _region_text(result.dets, int(row))


def models_markdown(gs: GroundedSAM) -> str:
    """One line naming the models, device and dtype in use."""
    sam, clip = gs.model_ids
    dtype = str(getattr(gs.predictor, "dtype", "")).replace("torch.", "")
    return f"Models: SAM `{sam or 'custom'}` · CLIP `{clip or 'custom'}` · device `{gs.device}`" + (
        f" · `{dtype}`" if dtype else ""
    )


# -- exports ---------------------------------------------------------------------------------


def export_files(session: Session, gs: GroundedSAM, opacity: float = 0.5) -> ExportFiles | None:
    """Write the current result's exports into the session's private temp folder.

    Files: ``<stem>_masks.zip`` (one binary PNG per instance, 255 inside),
    ``<stem>_overlay.png`` (what the page shows) and ``<stem>.json`` (the CLI's schema, see
    :mod:`grounded_sam.export.records`).

    Args:
        session: The tab's session.
        gs: The engine (for the model names in the JSON).
        opacity: Mask opacity of the overlay PNG.

    Returns:
        The three paths, or None when there is no result.
    """
    result = session.result
    if result is None:
        return None
    key = (round(float(opacity), 4), tuple(session.points), session.box_start, session.box)
    cached = session.exported
    if (
        cached is not None
        and cached[0] is result
        and cached[1] == key
        and all(p.is_file() for p in (cached[2].masks_zip, cached[2].overlay_png, cached[2].json))
    ):
        return cached[2]
    stem = safe_name(Path(session.name).stem or "image")
    out = session.export_dir()
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
        models={"sam": gs.model_ids[0], "clip": gs.model_ids[1]},
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
