"""What the page's phrases and clicks do: text queries, Find similar, SAM point/box prompts.

The page's query knobs (the threshold slider, Top-K, the refinement level, negative phrases)
become one :class:`~grounded_sam.grounding.options.QueryOptions` (:func:`query_options`), so
a bad value fails with the same message as in the Python API and the CLI. Every answer comes
from the session's index (see :mod:`grounded_sam.app.session`); nothing here indexes an image
unless the shared store evicted it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from grounded_sam.app.render import describe_region
from grounded_sam.app.session import (
    EMPTY_PHRASE,
    NO_IMAGE,
    Result,
    Session,
    UserError,
    md,
    session_index,
)
from grounded_sam.grounding.options import QueryOptions
from grounded_sam.inputs import parse_prompt

if TYPE_CHECKING:
    from grounded_sam.pipeline import GroundedSAM

__all__ = [
    "CLICK_MODES",
    "REFINEMENT_LEVELS",
    "SIMILAR_LABEL",
    "RefinementLevel",
    "clear_prompts",
    "click",
    "query_options",
    "refinement_params",
    "text_query",
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



# -- text prompts ----------------------------------------------------------------------------


def _slider_int(value: float | None) -> int | float | None:
    """A Top-K slider value for :class:`QueryOptions`: None for no limit (None or 0).

    Sliders send floats: a whole one becomes an int; anything else is left for
    :class:`QueryOptions` to refuse.
    """
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return None if value is None or (not isinstance(value, bool) and value == 0) else value


def query_options(
    phrases: Sequence[str],
    *,
    threshold: float | None,
    top_k: float | None,
    negative: str | None = None,
    refine: int | None = None,
    min_region_area: int | None = None,
) -> tuple[QueryOptions, list[str]]:
    """The page's knobs as one validated :class:`QueryOptions`.

    Args:
        phrases: The query's parsed phrases (a negative phrase may not be one of them).
        threshold: The threshold slider (None: the default).
        top_k: The Top-K slider (None or 0: no limit).
        negative: Comma-separated negative phrases, or None.
        refine: Refine passes (None: the default).
        min_region_area: Island / hole size in pixels (None: the default).

    Returns:
        ``(options, negatives)``: the value, and its negative phrases as a list.

    Raises:
        UserError: A bad value, with :class:`QueryOptions`' message.
    """
    given = {"threshold": threshold, "refine": refine, "min_region_area": min_region_area}
    try:
        options = QueryOptions().replace(
            top_k=_slider_int(top_k),
            negative=negative,
            **{k: v for k, v in given.items() if v is not None},
        )
    except ValueError as exc:
        raise UserError(str(exc)) from None
    try:
        return options, options.negatives_for(phrases)
    except ValueError as exc:
        raise UserError(f"Negative phrases: {exc}") from None


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
    if session.image is None or session.key is None:
        raise UserError(NO_IMAGE)
    if prompt is None or not str(prompt).replace(",", " ").strip():
        raise UserError(EMPTY_PHRASE)
    try:
        phrases = parse_prompt(str(prompt))
    except TypeError:
        raise UserError(EMPTY_PHRASE) from None
    except ValueError as exc:
        raise UserError(str(exc)) from None
    refine, min_area = refinement_params(level, session.image.shape[:2])
    options, negatives = query_options(
        phrases,
        threshold=threshold,
        top_k=top_k,
        negative=negative,
        refine=refine,
        min_region_area=min_area,
    )
    threshold = options.threshold
    with session.lock:
        index, image = session_index(session, gs), session.image
        t0 = time.perf_counter()
        dets = gs.query(
            index,
            phrases,
            threshold=options.threshold,
            top_k=options.top_k,
            refine=options.refine,
            min_region_area=options.min_region_area,
            negative=negatives or None,
        )
        seconds = time.perf_counter() - t0
        session.result = Result(image, dets, "text", str(prompt), phrases, seconds)
        session.reset_prompts()
    quoted = ", ".join(f"'{md(p)}'" for p in phrases)
    if len(dets) == 0:
        return (
            f"No region matched {quoted} at threshold {threshold:.2f} "
            f"(answered from the cached index in {seconds * 1000:.0f} ms). Try a lower "
            "threshold or another phrase."
        )
    counts = ", ".join(
        f"{md(p)}: {int((dets.class_id == i).sum())}" for i, p in enumerate(phrases)
    )
    return (
        f"Found {len(dets)} region{'s' if len(dets) != 1 else ''} for {quoted} ({counts}) "
        f"in {seconds * 1000:.0f} ms from the cached index (no re-indexing)."
    )


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
    options, negatives = query_options((), threshold=threshold, top_k=top_k, negative=negative)
    index, image = session_index(session, gs), session.image
    t0 = time.perf_counter()
    try:
        dets = gs.query(
            index,
            exemplars=[list(box)],
            exemplar_label=SIMILAR_LABEL,
            threshold=None if threshold is None else options.threshold,
            top_k=options.top_k,
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
    if session.image is None:
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
    index = session_index(session, gs)
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


