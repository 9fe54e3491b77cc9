"""Validation and normalisation of everything a user hands to the engine.

Every function here turns bad input into a ``ValueError`` / ``FileNotFoundError`` whose
message says what was wrong and what to do, before anything reaches torch.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = [
    "ImageInput",
    "load_image",
    "parse_prompt",
    "as_points",
    "as_boxes",
]

ImageInput = str | os.PathLike | Image.Image | np.ndarray
"""A path, a PIL image, or an HxWx3 uint8 RGB array."""


def load_image(source: ImageInput) -> np.ndarray:
    """Load and normalise an image to an RGB uint8 array.

    Grayscale, RGBA (composited on white), palette, CMYK and 16-bit images are converted;
    EXIF orientation is applied so the array is upright as a viewer shows it.

    Args:
        source: A file path, a ``PIL.Image.Image``, or an ``np.ndarray`` of shape (H, W, 3)
            and dtype uint8 in RGB order. (H, W) uint8 grayscale arrays are accepted too.

    Returns:
        Array of shape (H, W, 3), dtype uint8, RGB, C-contiguous.

    Raises:
        FileNotFoundError: The path does not exist.
        ValueError: The file is not a readable image, is truncated, has zero pixels, or the
            array has the wrong shape or dtype.
        TypeError: ``source`` is none of the accepted types.
    """
    if isinstance(source, (str, os.PathLike)):
        return _load_path(Path(source))
    if isinstance(source, Image.Image):
        return _from_pil(source, name="the PIL image")
    if isinstance(source, np.ndarray):
        return _from_array(source)
    raise TypeError(
        f"Expected an image path, a PIL.Image or an HxWx3 uint8 numpy array, got "
        f"{type(source).__name__}."
    )


def _load_path(path: Path) -> np.ndarray:
    if not path.exists():
        raise FileNotFoundError(f"Image not found: {path}. Check the path and try again.")
    if path.is_dir():
        raise ValueError(f"{path} is a directory, not an image file.")
    try:
        with Image.open(path) as img:
            img.load()
            return _from_pil(img, name=str(path))
    except UnidentifiedImageError as exc:
        raise ValueError(
            f"{path} is not an image file that can be read (supported: JPEG, PNG, BMP, WebP, "
            "TIFF, GIF)."
        ) from exc
    except (OSError, SyntaxError) as exc:
        raise ValueError(
            f"{path} could not be decoded ({exc}); the file is probably truncated or corrupt."
        ) from exc
    except Image.DecompressionBombError as exc:
        raise ValueError(f"{path} is too large to decode safely ({exc}).") from exc


def _from_pil(img: Image.Image, name: str) -> np.ndarray:
    if img.width == 0 or img.height == 0:
        raise ValueError(f"{name} has zero pixels ({img.width}x{img.height}).")
    img = ImageOps.exif_transpose(img) or img
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        hi = float(arr.max()) if arr.size else 0.0
        scale = 255.0 / 65535.0 if hi > 255 else 1.0
        gray = np.clip(arr * scale + 0.5, 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(gray[..., None], 3, axis=2))
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    rgb = img.convert("RGB")
    return np.array(rgb, dtype=np.uint8)


def _from_array(arr: np.ndarray) -> np.ndarray:
    if arr.dtype != np.uint8:
        raise ValueError(
            f"Image array must have dtype uint8 (values 0-255), got {arr.dtype}. "
            "Convert with `(arr * 255).clip(0, 255).astype(np.uint8)` if it holds floats in [0, 1]."
        )
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ValueError(
            f"Image array must have shape (H, W, 3) in RGB order, got {tuple(arr.shape)}."
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"Image array has zero pixels: shape {tuple(arr.shape)}.")
    if arr.shape[2] == 4:
        return _from_pil(Image.fromarray(arr, mode="RGBA"), name="the RGBA array")
    return np.ascontiguousarray(arr)


def parse_prompt(prompt: str | Sequence[str]) -> list[str]:
    """Split a text prompt into phrases.

    Args:
        prompt: One phrase (``"dog"``), comma-separated phrases (``"date, fig, hazelnut"``),
            or a list of phrases. Whitespace is stripped, empty pieces and exact duplicates
            (case-insensitive) are dropped, order is kept.

    Returns:
        The phrases, at least one.

    Raises:
        TypeError: ``prompt`` is not a string or a sequence of strings.
        ValueError: No non-blank phrase is left.
    """
    if isinstance(prompt, str):
        pieces = prompt.split(",")
    elif isinstance(prompt, Sequence) and not isinstance(prompt, (bytes, bytearray)):
        pieces = []
        for item in prompt:
            if not isinstance(item, str):
                raise TypeError(
                    f"Every phrase must be a string, got {type(item).__name__} ({item!r})."
                )
            pieces.append(item)
    else:
        raise TypeError(
            f"The prompt must be a string such as 'dog, cat' or a list of strings, got "
            f"{type(prompt).__name__}."
        )
    phrases: list[str] = []
    seen: set[str] = set()
    for piece in pieces:
        phrase = " ".join(piece.split())
        if phrase and phrase.lower() not in seen:
            seen.add(phrase.lower())
            phrases.append(phrase)
    if not phrases:
        raise ValueError(
            "The prompt is empty: give at least one phrase, e.g. 'dog' or 'dog, frisbee'."
        )
    return phrases


def as_points(
    points: object, labels: object | None, image_size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Validate point prompts.

    Args:
        points: Array-like of shape (N, 2), xy in original image pixels.
        labels: Array-like of shape (N,), 1 for foreground, 0 for background; None means all
            foreground.
        image_size: (H, W) of the image.

    Returns:
        ``(points, labels)`` as float32 (N, 2) and int64 (N,) arrays.

    Raises:
        ValueError: Wrong shape, non-finite values, labels other than 0/1, or a point
            outside the image.
    """
    try:
        pts = np.asarray(points, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"Points must be numbers shaped (N, 2) as [[x, y], ...]: {exc}") from exc
    if pts.ndim == 1 and pts.shape[0] == 2:
        pts = pts[None]
    if pts.ndim != 2 or pts.shape[1] != 2 or pts.shape[0] == 0:
        raise ValueError(f"Points must have shape (N, 2) as [[x, y], ...], got {pts.shape}.")
    if not np.isfinite(pts).all():
        raise ValueError("Points contain NaN or infinite values.")
    h, w = image_size
    outside = (pts[:, 0] < 0) | (pts[:, 0] > w) | (pts[:, 1] < 0) | (pts[:, 1] > h)
    if outside.any():
        bad = pts[outside][0].tolist()
        raise ValueError(
            f"Point {bad} lies outside the image (width {w}, height {h}); points are (x, y) "
            "in pixels of the original image."
        )
    if labels is None:
        lab = np.ones(len(pts), dtype=np.int64)
    else:
        lab = np.asarray(labels).reshape(-1)
        if lab.shape[0] != pts.shape[0]:
            raise ValueError(
                f"Got {pts.shape[0]} points but {lab.shape[0]} labels: give one label per point."
            )
        if not np.isin(lab, (0, 1)).all():
            raise ValueError("Point labels must be 1 (foreground) or 0 (background).")
        lab = lab.astype(np.int64)
    return pts, lab


def as_boxes(boxes: object, image_size: tuple[int, int]) -> np.ndarray:
    """Validate box prompts.

    Args:
        boxes: Array-like of shape (4,) or (N, 4), xyxy in original image pixels.
        image_size: (H, W) of the image.

    Returns:
        float32 array of shape (N, 4), xyxy.

    Raises:
        ValueError: Wrong shape, non-finite values, x2 < x1 or y2 < y1, or a box outside the
            image.
    """
    try:
        arr = np.asarray(boxes, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"Boxes must be numbers shaped (N, 4) as [[x1, y1, x2, y2]]: {exc}"
        ) from exc
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] != 4 or arr.shape[0] == 0:
        raise ValueError(f"Boxes must have shape (N, 4) as [[x1, y1, x2, y2]], got {arr.shape}.")
    if not np.isfinite(arr).all():
        raise ValueError("Boxes contain NaN or infinite values.")
    flipped = (arr[:, 2] < arr[:, 0]) | (arr[:, 3] < arr[:, 1])
    if flipped.any():
        bad = arr[flipped][0].tolist()
        raise ValueError(
            f"Box {bad} has x2 < x1 or y2 < y1; boxes are [x1, y1, x2, y2] with the top-left "
            "corner first."
        )
    h, w = image_size
    outside = (arr[:, 0] < 0) | (arr[:, 1] < 0) | (arr[:, 2] > w) | (arr[:, 3] > h)
    if outside.any():
        bad = arr[outside][0].tolist()
        raise ValueError(
            f"Box {bad} extends outside the image (width {w}, height {h}); boxes are xyxy in "
            "pixels of the original image."
        )
    return arr
