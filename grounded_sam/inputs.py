"""Validation and normalisation of everything a user hands to the engine.

Every function here turns bad input into a ``ValueError`` / ``FileNotFoundError`` whose
message says what was wrong and what to do, before anything reaches torch.
"""

from __future__ import annotations

import logging
import numbers
import os
import stat
import unicodedata
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from grounded_sam import limits

logger = logging.getLogger(__name__)

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageInput",
    "find_images",
    "image_file_size",
    "load_image",
    "parse_prompt",
    "as_points",
    "as_boxes",
    "check_image_size",
    "check_int",
    "check_number",
    "check_phrase",
]

ImageInput = str | os.PathLike | Image.Image | np.ndarray
"""A path, a PIL image, or an HxWx3 uint8 RGB array."""

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
"""Extensions of the images a folder scan picks up (compared case-insensitively)."""


def find_images(
    root: str | os.PathLike,
    exclude: Sequence[str | os.PathLike] = (),
    skip_dir: Callable[[Path], bool] | None = None,
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
) -> list[Path]:
    """All images under ``root``, recursively, in a stable (sorted) order.

    Only regular files (or links to them) are listed: a FIFO, device or socket with an image
    name is skipped with a warning (reading one would block forever), as is a broken link.

    Args:
        root: Folder to scan.
        exclude: Folders to skip (e.g. the output folder when it is inside ``root``).
            Hidden folders (name starting with ".") are skipped too.
        skip_dir: Called with each subfolder (never ``root``); True skips it and everything
            under it (e.g. a dataset an earlier labeling run wrote there).
        extensions: Lower-case suffixes to list (default :data:`IMAGE_EXTENSIONS`; the video
            labeler gives :data:`grounded_sam.video.reader.VIDEO_EXTENSIONS`).

    Returns:
        Paths of files whose extension is one of ``extensions`` (any case), sorted by their
        path relative to ``root``.
    """
    root = Path(root)
    skip = {Path(p).resolve() for p in exclude}
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        kept = []
        for d in sorted(dirnames):
            if d.startswith(".") or (here / d).resolve() in skip:
                continue
            if skip_dir is not None and skip_dir(here / d):
                continue
            kept.append(d)
        dirnames[:] = kept
        for name in filenames:
            if Path(name).suffix.lower() in extensions and not name.startswith("."):
                path = here / name
                kind = _special_kind(path)
                if kind is None:
                    found.append(path)
                else:
                    logger.warning("Skipping %s: it is %s, not an image file", path, kind)
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def _special_kind(path: Path) -> str | None:
    """What ``path`` is when it is not a regular file (``"a FIFO"``, ...); None if it is.

    Uses ``os.stat`` only (follows links, never opens the file, so never blocks).
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "a broken link" if os.path.islink(path) else "missing"
    except OSError as exc:
        return f"not accessible ({exc.strerror})"
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "a special file"


def load_image(source: ImageInput) -> np.ndarray:
    """Load and normalise an image to an RGB uint8 array.

    Grayscale, RGBA (composited on white), palette, CMYK and 16-bit images are converted;
    EXIF orientation is applied so the array is upright as a viewer shows it. 16- and 32-bit
    integer images with values above 255 are scaled by 255/65535. Floating-point images (e.g.
    32-bit float TIFFs) whose finite values all lie in [0, 1] are scaled by 255; other float
    images are taken as 0-255 values and clipped to that range; NaN becomes 0 and +-inf the
    nearest end of the range.

    Only regular files are opened: a FIFO, device or socket is refused from its ``stat``
    alone (reading one could block forever).

    Args:
        source: A file path, a ``PIL.Image.Image``, or an ``np.ndarray`` of shape (H, W, 3)
            and dtype uint8 in RGB order. (H, W) uint8 grayscale arrays are accepted too.

    Returns:
        Array of shape (H, W, 3), dtype uint8, RGB, C-contiguous.

    Raises:
        FileNotFoundError: The path does not exist.
        ValueError: The file is not a readable image (or not a regular file), is truncated,
            has zero pixels, or the array has the wrong shape or dtype.
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
    kind = _special_kind(path)  # before opening: reading a FIFO or device blocks forever
    if kind is not None:
        raise ValueError(f"{path} is {kind}, not an image file: give a regular image file.")
    try:
        with Image.open(path) as img:
            check_image_size(img.width, img.height, name=str(path))
            img.load()
            return _from_pil(img, name=str(path))
    except PermissionError as exc:
        raise PermissionError(
            f"Permission denied reading {path}: make the file readable (e.g. chmod a+r)."
        ) from exc
    except Image.DecompressionBombError as exc:
        raise ValueError(
            f"{path} is too large to decode safely (a possible decompression bomb: {exc})."
        ) from exc
    except UnidentifiedImageError as exc:
        raise ValueError(
            f"{path} is not an image file that can be read (supported: JPEG, PNG, BMP, WebP, "
            "TIFF, GIF)."
        ) from exc
    except (OSError, SyntaxError) as exc:
        raise ValueError(
            f"{path} could not be decoded ({exc}); the file is probably truncated or corrupt."
        ) from exc


def image_file_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(height, width)`` of an image file as :func:`load_image` returns it, from its header.

    Reads the header and EXIF orientation only (no pixel decoding), so that a file can be
    checked against the size it had when it was processed.

    Raises:
        FileNotFoundError: The path does not exist.
        ValueError: Not a regular file, or not a readable image.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Image not found: {path}. Check the path and try again.")
    kind = _special_kind(path)
    if kind is not None:
        raise ValueError(f"{path} is {kind}, not an image file: give a regular image file.")
    try:
        with Image.open(path) as img:
            width, height = img.size
            orientation = img.getexif().get(0x0112, 1)
    except (OSError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ValueError(f"{path} is not an image file that can be read ({exc}).") from exc
    return (width, height) if orientation in (5, 6, 7, 8) else (height, width)


def check_image_size(width: int, height: int, name: str = "the image") -> None:
    """Refuse images beyond :data:`grounded_sam.limits.MAX_IMAGE_PIXELS` / ``MAX_IMAGE_SIDE``.

    Args:
        width: Width in pixels.
        height: Height in pixels.
        name: How to call the image in the message.

    Raises:
        ValueError: The image is too large (the message gives the bound and why).
    """
    if width * height > limits.MAX_IMAGE_PIXELS or max(width, height) > limits.MAX_IMAGE_SIDE:
        raise ValueError(
            f"{name} is {width}x{height} px; the limit is {limits.MAX_IMAGE_PIXELS:,} pixels "
            f"and {limits.MAX_IMAGE_SIDE} px per side ({limits.REASONS['image_pixels']})."
        )


def _from_pil(img: Image.Image, name: str) -> np.ndarray:
    if img.width == 0 or img.height == 0:
        raise ValueError(f"{name} has zero pixels ({img.width}x{img.height}).")
    check_image_size(img.width, img.height, name=name)
    img = ImageOps.exif_transpose(img) or img
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        finite = arr[np.isfinite(arr)]
        lo = float(finite.min()) if finite.size else 0.0
        hi = float(finite.max()) if finite.size else 0.0
        if img.mode == "F":  # floats: [0, 1] scaled to 0-255, anything else clipped
            scale = 255.0 if 0.0 <= lo and hi <= 1.0 else 1.0
        else:
            scale = 255.0 / 65535.0 if hi > 255 else 1.0
        arr = np.nan_to_num(arr, nan=0.0, posinf=255.0 / scale, neginf=0.0)
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
    check_image_size(arr.shape[1], arr.shape[0], name="the image array")
    if arr.shape[2] == 4:
        return _from_pil(Image.fromarray(arr, mode="RGBA"), name="the RGBA array")
    return np.ascontiguousarray(arr)


def parse_prompt(prompt: str | Sequence[str], *, what: str = "prompt") -> list[str]:
    """Split a text prompt into phrases, validated and normalised.

    Args:
        prompt: One phrase (``"dog"``), comma-separated phrases (``"date, fig, hazelnut"``),
            or a list of phrases. Each phrase is NFC-normalised, whitespace runs (tabs and
            newlines too) become one space, empty pieces and exact duplicates
            (case-insensitive) are dropped, order is kept.
        what: What the text is, in error messages (``"class list (--classes)"``: "The class
            list (--classes) is empty", "More than 128 phrases in the class list ...").

    Returns:
        The phrases, at least one and at most :data:`grounded_sam.limits.MAX_PHRASES`.

    Raises:
        TypeError: ``prompt`` is not a string or a sequence of strings.
        ValueError: No non-blank phrase is left, a phrase is not valid text (lone surrogates,
            control characters), is longer than ``MAX_PHRASE_CHARS``, or there are more
            than ``MAX_PHRASES`` phrases.
    """
    if isinstance(prompt, str):
        if len(prompt) > limits.MAX_PROMPT_CHARS:
            raise ValueError(
                f"The {what} has {len(prompt):,} characters; the limit is "
                f"{limits.MAX_PROMPT_CHARS:,} ({limits.MAX_PHRASES} phrases of at most "
                f"{limits.MAX_PHRASE_CHARS} characters)."
            )
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
            f"The {what} must be a string such as 'dog, cat' or a list of strings, got "
            f"{type(prompt).__name__}."
        )
    phrases: list[str] = []
    seen: set[str] = set()
    for piece in pieces:
        phrase = check_phrase(piece)
        if phrase and phrase.lower() not in seen:
            seen.add(phrase.lower())
            phrases.append(phrase)
            if len(phrases) > limits.MAX_PHRASES:
                raise ValueError(
                    f"More than {limits.MAX_PHRASES} phrases in one {what} "
                    f"({limits.REASONS['phrases']})."
                )
    if not phrases:
        raise ValueError(
            f"The {what} is empty: give at least one phrase, e.g. 'dog' or 'dog, frisbee'."
        )
    return phrases


def check_phrase(text: str) -> str:
    """Validate and normalise one phrase (may return ``""`` for a blank one).

    Args:
        text: The phrase as given.

    Returns:
        The phrase, NFC-normalised with whitespace runs collapsed to one space.

    Raises:
        ValueError: Lone surrogates (e.g. undecodable bytes from a command line), control
            characters, or more than :data:`grounded_sam.limits.MAX_PHRASE_CHARS` characters.
            The message shows the phrase with such characters escaped.
    """
    if len(text) > limits.MAX_PROMPT_CHARS:
        raise ValueError(
            f"A phrase has {len(text):,} characters; the limit is {limits.MAX_PHRASE_CHARS} "
            f"({limits.REASONS['phrase_chars']})."
        )
    bad = next((c for c in text if unicodedata.category(c) == "Cs"), None)
    if bad is not None:
        raise ValueError(
            f"The phrase {_shown(text)} is not valid text: it holds the lone surrogate "
            f"U+{ord(bad):04X} (often an undecodable byte in a non-UTF-8 terminal or file). "
            "Give the phrase as UTF-8 text."
        )
    phrase = " ".join(unicodedata.normalize("NFC", text).split())
    bad = next((c for c in phrase if unicodedata.category(c) == "Cc"), None)
    if bad is not None:
        raise ValueError(
            f"The phrase {_shown(phrase)} holds the control character U+{ord(bad):04X}; "
            "phrases are plain words such as 'red apple'."
        )
    if len(phrase) > limits.MAX_PHRASE_CHARS:
        raise ValueError(
            f"The phrase {_shown(phrase[:40] + '...')} has {len(phrase)} characters; the limit "
            f"is {limits.MAX_PHRASE_CHARS} ({limits.REASONS['phrase_chars']})."
        )
    return phrase


def _shown(text: str) -> str:
    """A printable, quoted rendering of user text (surrogates and controls escaped)."""
    out = []
    for c in text:
        if unicodedata.category(c) in ("Cs", "Cc"):
            out.append(f"\\u{ord(c):04x}" if ord(c) > 0xFF else f"\\x{ord(c):02x}")
        else:
            out.append(c)
    return "'" + "".join(out) + "'"


def check_number(
    name: str,
    value: object,
    low: float | None = None,
    high: float | None = None,
    why: str | None = None,
) -> float:
    """Validate a real number knob (Python or numpy scalar; not bool, not NaN).

    Args:
        name: The knob's name, for the message.
        value: The value given.
        low: Smallest allowed value (inclusive), or None.
        high: Largest allowed value (inclusive), or None.
        why: Reason for the bound, appended to the message.

    Returns:
        The value as a Python float.

    Raises:
        ValueError: Not a real number, NaN, or out of ``[low, high]``.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number, got {value!r} ({type(value).__name__}).")
    number = float(value)
    if number != number:
        raise ValueError(f"{name} must be a number, got NaN.")
    _check_range(name, number, low, high, why, f"{number:g}")
    return number


def check_int(
    name: str,
    value: object,
    low: int | None = None,
    high: int | None = None,
    why: str | None = None,
) -> int:
    """Validate an integer knob (Python or numpy integer; not bool, not float).

    Args:
        name: The knob's name, for the message.
        value: The value given.
        low: Smallest allowed value (inclusive), or None.
        high: Largest allowed value (inclusive), or None.
        why: Reason for the bound, appended to the message.

    Returns:
        The value as a Python int.

    Raises:
        ValueError: Not an integer (``True`` and ``2.0`` are refused), or out of range.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r} ({type(value).__name__}).")
    number = int(value)
    _check_range(name, number, low, high, why, str(number))
    return number


def _check_range(
    name: str, number: float, low: float | None, high: float | None, why: str | None, shown: str
) -> None:
    """ValueError naming the knob, its allowed range and the value (``shown``) if outside."""
    if (low is not None and number < low) or (high is not None and number > high):
        reason = f" ({why})" if why else ""
        raise ValueError(f"{name} must be {_range(low, high)}, got {shown}{reason}.")


def _range(low: float | None, high: float | None) -> str:
    if low is not None and high is not None:
        return f"in [{low:g}, {high:g}]"
    if low is not None:
        return f">= {low:g}"
    return f"<= {high:g}"


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
