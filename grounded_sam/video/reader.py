"""Reading a video one frame at a time: a file (OpenCV, PyAV as fallback), a folder, or frames.

:func:`open_video` checks the source and decodes its first frame before anything else runs
(so an unreadable or empty video fails before models load), then :class:`VideoReader` yields
``(index, frame)`` pairs, one decoded frame in memory at a time. Every frame must have the
first frame's size; ``max_frames`` stops early.

Sources:

* a video file OpenCV can decode (``.mp4``, ``.avi``, ``.mov``, ``.mkv``, ...); when OpenCV
  cannot open it and PyAV (``av``) is installed, PyAV is tried;
* a folder of frame images (:data:`grounded_sam.inputs.IMAGE_EXTENSIONS`), in natural order
  of their names (``frame_2.png`` before ``frame_10.png``), not recursive;
* in Python, any iterable of (H, W, 3) uint8 RGB arrays (a list, a generator, a
  :class:`~grounded_sam.video.synthetic.SyntheticVideo`, ...).
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import re
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from grounded_sam.inputs import IMAGE_EXTENSIONS, check_image_size, check_int, load_image

__all__ = [
    "DEFAULT_FPS",
    "MAX_FRAMES",
    "VIDEO_EXTENSIONS",
    "VideoReader",
    "VideoSource",
    "open_video",
]

logger = logging.getLogger(__name__)

#: Frame rate assumed for a folder of frames or a video that does not say its own.
DEFAULT_FPS = 30.0
#: Largest ``max_frames`` accepted (about 9 hours at 30 fps).
MAX_FRAMES = 1_000_000
#: Suffixes a folder scan takes for video files (``grounded-sam label`` on a folder of videos;
#: compared case-insensitively). :func:`open_video` itself opens any file OpenCV or PyAV reads.
VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv")

VideoSource = str | os.PathLike | Iterable[np.ndarray]
"""A video file, a folder of frames, or an iterable of (H, W, 3) uint8 RGB frames."""


def _natural_key(name: str) -> list[Any]:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


class VideoReader:
    """Frames of one video, decoded lazily (see the module docstring).

    Build it with :func:`open_video`. Iterate once.

    Attributes:
        name: The source's path, or ``"<frames>"``.
        stem: A file stem for outputs (``"clip"`` for ``clip.mp4`` or a folder ``clip/``).
        fps: Frames per second (the file's own, else :data:`DEFAULT_FPS`).
        size: (H, W) of every frame (the first frame's).
        frame_count: Number of frames when known beforehand (file header, folder listing,
            ``len()`` of a sequence; capped by ``max_frames``), else None. A file header may
            be off; the frames actually decoded decide.
        max_frames: At most this many frames are read (None: all).
    """

    def __init__(
        self,
        name: str,
        stem: str,
        fps: float,
        first: np.ndarray,
        rest: Iterator[np.ndarray],
        frame_count: int | None,
        max_frames: int | None,
        close: Any = None,
    ) -> None:
        self.name = name
        self.stem = stem
        self.fps = fps
        self.size = (int(first.shape[0]), int(first.shape[1]))
        self.max_frames = max_frames
        if frame_count is not None and max_frames is not None:
            frame_count = min(frame_count, max_frames)
        self.frame_count = frame_count
        self._first: np.ndarray | None = first
        self._rest = rest
        self._close = close
        self._used = False

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        """``(index, (H, W, 3) uint8 RGB)`` from index 0.

        Raises:
            ValueError: A frame's size differs from the first frame's, or a frame cannot be
                decoded (the message names the frame).
            RuntimeError: Iterated twice.
        """
        if self._used:
            raise RuntimeError("A VideoReader can be iterated once; open the video again.")
        self._used = True
        try:
            frames = itertools.chain([self._first], self._rest)
            self._first = None
            limit = self.max_frames
            for index, frame in enumerate(frames):
                if limit is not None and index >= limit:
                    break
                if index:
                    frame = _check_frame(frame, f"{self.name}: frame {index}")
                    if frame.shape[:2] != self.size:
                        h, w = self.size
                        raise ValueError(
                            f"{self.name}: frame {index} is {frame.shape[1]}x{frame.shape[0]} "
                            f"but frame 0 is {w}x{h}; every frame of a video must have the same "
                            f"size (resize the frames first, e.g. ffmpeg -vf scale={w}:{h})."
                        )
                yield index, frame
        finally:
            self.close()

    def close(self) -> None:
        """Release the decoder (also done when iteration ends)."""
        if self._close is not None:
            close, self._close = self._close, None
            close()


def _check_frame(frame: object, name: str) -> np.ndarray:
    """A frame as (H, W, 3) uint8 RGB, or a one-line ValueError."""
    if not isinstance(frame, np.ndarray):
        raise ValueError(f"{name} is a {type(frame).__name__}, not an (H, W, 3) uint8 array.")
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(
            f"{name} must be an (H, W, 3) uint8 RGB array, got {frame.dtype} {tuple(frame.shape)}."
        )
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise ValueError(f"{name} has zero pixels: shape {tuple(frame.shape)}.")
    check_image_size(frame.shape[1], frame.shape[0], name=name)
    return np.ascontiguousarray(frame)


def open_video(
    source: VideoSource, *, max_frames: int | None = None, fps: float | None = None
) -> VideoReader:
    """Open a video and decode its first frame (see the module docstring).

    Args:
        source: A video file, a folder of frames, or an iterable of (H, W, 3) uint8 RGB
            frames (streamed: a generator is read as the tracker goes).
        max_frames: Read at most this many frames (None: all).
        fps: Frames per second to report (None: the file's own, else 30).

    Returns:
        The reader.

    Raises:
        FileNotFoundError: No such file or folder.
        ValueError: Not a readable video, no frames, a first frame that is not an image, a bad
            ``max_frames`` / ``fps``; one line saying what to do.
    """
    if max_frames is not None:
        check_int("max_frames", max_frames, 1, MAX_FRAMES)
    if fps is not None and not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive number, got {fps!r}.")
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise FileNotFoundError(f"Video not found: {path}")
        mode = os.stat(path).st_mode
        if stat.S_ISDIR(mode):
            return _open_folder(path, max_frames, fps)
        if not stat.S_ISREG(mode):
            raise ValueError(f"{path} is not a regular file: give a video file or a folder.")
        return _open_file(path, max_frames, fps)
    if isinstance(source, np.ndarray):
        raise TypeError(
            "A video is a file, a folder of frames or a sequence of frames; for one (H, W, 3) "
            "image use segment(image, prompt); a (T, H, W, 3) array: pass list(array)."
        )
    if not isinstance(source, Iterable):
        raise TypeError(f"A video is a path or an iterable of frames, got {type(source).__name__}.")
    count = len(source) if hasattr(source, "__len__") else None  # type: ignore[arg-type]
    frames = (f[1] if isinstance(f, tuple) and len(f) == 2 else f for f in source)
    first = next(frames, None)
    if first is None:
        raise ValueError("The video has no frames (the sequence is empty).")
    first = _check_frame(first, "frame 0")
    return VideoReader("<frames>", "video", fps or DEFAULT_FPS, first, frames, count, max_frames)


def _open_folder(path: Path, max_frames: int | None, fps: float | None) -> VideoReader:
    names = sorted(
        (
            p.name
            for p in path.iterdir()
            if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file()
        ),
        key=_natural_key,
    )
    if not names:
        raise ValueError(
            f"{path} holds no frame images ({', '.join(IMAGE_EXTENSIONS)}): give a video file "
            "or a folder of frames."
        )

    def frames() -> Iterator[np.ndarray]:
        for i, name in enumerate(names):
            try:
                yield load_image(path / name)
            except ValueError as exc:
                raise ValueError(f"{path}: frame {i} ({name}) cannot be read: {exc}") from exc

    it = frames()
    first = next(it)
    return VideoReader(
        str(path), path.name or "video", fps or DEFAULT_FPS, first, it, len(names), max_frames
    )


def _open_file(path: Path, max_frames: int | None, fps: float | None) -> VideoReader:
    import cv2

    cap = _quiet_capture(cv2, path)
    if cap.isOpened():
        ok, bgr = cap.read()
        if not ok or bgr is None:
            cap.release()
            raise ValueError(
                f"{path} has no frames that can be decoded (an empty or broken video): check it "
                "plays, or give a folder of frames."
            )
        native = cap.get(cv2.CAP_PROP_FPS)
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)

        def frames() -> Iterator[np.ndarray]:
            while True:
                ok, bgr = cap.read()
                if not ok or bgr is None:
                    return
                yield _bgr_to_rgb(bgr)

        rate = fps or (native if native and math.isfinite(native) and native > 0 else DEFAULT_FPS)
        first = _check_frame(_bgr_to_rgb(bgr), f"{path}: frame 0")
        return VideoReader(
            str(path), path.stem, float(rate), first, frames(), count or None, max_frames,
            close=cap.release,
        )  # fmt: skip
    cap.release()
    return _open_with_pyav(path, max_frames, fps)


def _quiet_capture(cv2: Any, path: Path) -> Any:
    """``cv2.VideoCapture(path)`` without FFmpeg's own log lines on stderr.

    A file FFmpeg cannot parse makes it print lines such as ``moov atom not found``; the
    reader reports the problem itself, in one line. The log level is FFmpeg's (through
    ``OPENCV_FFMPEG_LOGLEVEL``, read when a capture opens), set for this call only unless the
    user set it.
    """
    key = "OPENCV_FFMPEG_LOGLEVEL"
    previous = os.environ.get(key)
    if previous is None:
        os.environ[key] = "-8"  # AV_LOG_QUIET
    try:
        return cv2.VideoCapture(str(path))
    finally:
        if previous is None:
            os.environ.pop(key, None)


def _bgr_to_rgb(bgr: np.ndarray) -> np.ndarray:
    if bgr.ndim == 2:
        return np.ascontiguousarray(np.repeat(bgr[..., None], 3, axis=2))
    return np.ascontiguousarray(bgr[..., 2::-1])


def _open_with_pyav(path: Path, max_frames: int | None, fps: float | None) -> VideoReader:
    unreadable = (
        f"{path} is not a video that OpenCV or PyAV can read: give a video file (.mp4, .avi, "
        ".mov, .mkv, ...) or a folder of frame images."
    )
    try:
        import av
    except ImportError:
        raise ValueError(unreadable) from None
    try:
        container = av.open(str(path))
        stream = container.streams.video[0]
    except (OSError, IndexError, ValueError) as exc:  # av.error.* are OSError / ValueError
        raise ValueError(f"{unreadable} ({exc})") from exc
    decoded = (f.to_ndarray(format="rgb24") for f in container.decode(stream))
    try:
        first = next(decoded, None)
    except (OSError, ValueError) as exc:
        container.close()
        raise ValueError(f"{unreadable} ({exc})") from exc
    if first is None:
        container.close()
        raise ValueError(f"{path} has no frames that can be decoded (an empty or broken video).")
    rate = fps or (float(stream.average_rate) if stream.average_rate else DEFAULT_FPS)
    return VideoReader(
        str(path), path.stem, rate, _check_frame(first, f"{path}: frame 0"), decoded,
        stream.frames or None, max_frames, close=container.close,
    )  # fmt: skip
