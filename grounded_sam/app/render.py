"""What the page shows: the overlay with prompts drawn, the regions table, region details.

Pure functions of a session's result and prompts (no engine work, no state written), so
redraws may run beside engine calls.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np
import supervision as sv

from grounded_sam.app.session import Session, md
from grounded_sam.export.annotate import annotate_detections

if TYPE_CHECKING:
    from grounded_sam.pipeline import GroundedSAM

__all__ = [
    "TABLE_HEADERS",
    "describe_region",
    "describe_row",
    "models_markdown",
    "region_table",
    "render",
]

TABLE_HEADERS = [
    "#",
    "label",
    "confidence",
    "CLIP score",
    "SAM IoU",
    "box (x1, y1, x2, y2)",
    "area (px)",
]



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
        f"**{md(name)}** (region #{i}): confidence {conf:.3f} · CLIP score {clip_txt} · "
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
    text = "no CLIP (SAM 3 grounds text)" if getattr(gs, "grounds_text", False) else None
    clip_part = text or f"CLIP `{clip or 'custom'}`"
    return f"Models: SAM `{sam or 'custom'}` · {clip_part} · device `{gs.device}`" + (
        f" · `{dtype}`" if dtype else ""
    )
