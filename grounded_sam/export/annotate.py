"""Overlay drawing with supervision's annotators: masks, boxes and "label confidence" text."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

import numpy as np
import supervision as sv

__all__ = ["annotate_detections", "detection_labels", "draw_bgr", "drawable_text"]

#: Longest label drawn (longer labels are cut with "...").
MAX_LABEL_CHARS = 60


def drawable_text(text: str) -> str:
    """Text that OpenCV's Hershey fonts can draw: printable ASCII only.

    OpenCV draws only ASCII; other characters become ``?`` in its output at best, and text
    that is not valid Unicode (lone surrogates) crashes the process inside OpenCV. Accents
    are dropped (``"crème"`` -> ``"creme"``), other non-ASCII characters become ``?``,
    control characters a space; the result is cut to :data:`MAX_LABEL_CHARS`.

    Args:
        text: Any ``str`` (even with lone surrogates).

    Returns:
        A printable ASCII string.
    """
    out = []
    for ch in unicodedata.normalize("NFKD", text.encode("utf-8", "replace").decode("utf-8")):
        if " " <= ch <= "~":
            out.append(ch)
        elif unicodedata.combining(ch):
            continue
        elif unicodedata.category(ch) in ("Cc", "Zs", "Zl", "Zp"):
            out.append(" ")
        else:
            out.append("?")
    drawn = "".join(out)
    if len(drawn) > MAX_LABEL_CHARS:
        drawn = drawn[: MAX_LABEL_CHARS - 3] + "..."
    return drawn


def detection_labels(dets: sv.Detections) -> list[str]:
    """The text drawn next to each detection: ``"label confidence"``.

    Args:
        dets: Detections; the label is ``data["class_name"]`` when present, else the
            ``class_id``, else the row index.

    Returns:
        One string per detection, e.g. ``"fig 0.87"`` (just ``"fig"`` without confidence).
    """
    names = dets.data.get("class_name") if dets.data else None
    labels = []
    for i in range(len(dets)):
        if names is not None and len(names) == len(dets):
            name = str(names[i])
        elif dets.class_id is not None:
            name = str(int(dets.class_id[i]))
        else:
            name = f"#{i}"
        if dets.confidence is not None and np.isfinite(dets.confidence[i]):
            name = f"{name} {float(dets.confidence[i]):.2f}"
        labels.append(name)
    return labels


def annotate_detections(
    image: np.ndarray,
    dets: sv.Detections,
    opacity: float = 0.5,
    labels: Sequence[str] | None = None,
    *,
    draw_boxes: bool = True,
    draw_labels: bool = True,
) -> np.ndarray:
    """Draw detections on a copy of an image.

    Masks are filled with ``opacity`` (MaskAnnotator), boxes are outlined (BoxAnnotator)
    and each detection gets a ``"label confidence"`` tag (LabelAnnotator). Colors follow the
    class (``class_id``) when there is one, else the detection's index. Line width and text
    size scale with the image.

    Args:
        image: (H, W, 3) uint8 RGB image (not modified).
        dets: Detections in that image's pixel frame: ``xyxy`` (N, 4) float xyxy, optional
            ``mask`` (N, H, W) bool, optional ``confidence`` (N,), ``class_id`` (N,) and
            ``data["class_name"]`` (N,).
        opacity: Mask fill opacity in [0, 1] (0 draws no fill).
        labels: Custom texts, one per detection (default :func:`detection_labels`).
        draw_boxes: Outline the boxes.
        draw_labels: Draw the text tags.

    Returns:
        (H, W, 3) uint8 RGB annotated image (a new array).

    Raises:
        ValueError: Bad image shape/dtype, opacity outside [0, 1], a label count that does
            not match, or masks of a different size than the image.
    """
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3:
        raise ValueError("image must be an (H, W, 3) uint8 RGB numpy array.")
    if image.shape[2] != 3:
        raise ValueError(f"image must have 3 channels (RGB), got shape {image.shape}.")
    if not 0.0 <= float(opacity) <= 1.0:
        raise ValueError(f"opacity must be in [0, 1], got {opacity!r}.")
    if labels is not None and len(labels) != len(dets):
        raise ValueError(f"Got {len(labels)} labels for {len(dets)} detections.")
    if dets.mask is not None and len(dets) and dets.mask.shape[1:] != image.shape[:2]:
        raise ValueError(
            f"Masks are {dets.mask.shape[1:]} but the image is {image.shape[:2]}: draw "
            "detections on the image they were computed for."
        )
    texts = None
    if draw_labels:
        texts = [str(t) for t in (labels if labels is not None else detection_labels(dets))]
    # supervision's annotators draw with OpenCV, whose images are BGR.
    scene = draw_bgr(np.ascontiguousarray(image[..., ::-1]), dets, opacity, texts, draw_boxes)
    return np.ascontiguousarray(scene[..., ::-1])


def draw_bgr(
    scene: np.ndarray,
    dets: sv.Detections,
    opacity: float,
    texts: Sequence[str] | None,
    draw_boxes: bool = True,
) -> np.ndarray:
    """Draw masks, boxes and text tags on a BGR image in place (as supervision does).

    Shared by :func:`annotate` and the video writer. Colours follow the track
    (``tracker_id``) when there is one, else the class (``class_id``), else the index.

    Args:
        scene: (H, W, 3) uint8 BGR, C-contiguous; drawn on.
        dets: Detections in its pixel frame (see :func:`annotate`).
        opacity: Mask fill opacity in [0, 1] (0 draws no fill).
        texts: One tag per detection, or None for no tags.
        draw_boxes: Outline the boxes.

    Returns:
        (H, W, 3) uint8 BGR, the annotated scene.
    """
    if len(dets) == 0:
        return scene
    if dets.tracker_id is not None:
        lookup = sv.ColorLookup.TRACK
    elif dets.class_id is not None:
        lookup = sv.ColorLookup.CLASS
    else:
        lookup = sv.ColorLookup.INDEX
    h, w = scene.shape[:2]
    thickness = sv.calculate_optimal_line_thickness(resolution_wh=(w, h))
    text_scale = sv.calculate_optimal_text_scale(resolution_wh=(w, h))
    if dets.mask is not None and opacity > 0:
        scene = sv.MaskAnnotator(opacity=float(opacity), color_lookup=lookup).annotate(scene, dets)
    if draw_boxes:
        scene = sv.BoxAnnotator(thickness=thickness, color_lookup=lookup).annotate(scene, dets)
    if texts is not None:
        scene = sv.LabelAnnotator(
            color_lookup=lookup,
            text_scale=text_scale,
            text_thickness=max(1, thickness // 2),
            text_padding=max(2, int(6 * text_scale)),
            smart_position=True,
        ).annotate(scene, dets, labels=[drawable_text(t) for t in texts])
    return scene
