"""The Video tab's logic: an uploaded clip tracked with the page's engine (plain Python, no gradio).

The tab runs the same call as ``grounded-sam track``: :func:`grounded_sam.video.api.track`
with the page's engine grounding the phrases on key frames and the propagator of
:func:`grounded_sam.video.api.engine_propagator` (SAM 2.1's video predictor: the engine's own
SAM when that is SAM 2.1, else the checkpoint the app was started with, ``--propagator``).
:class:`VideoTracking` holds that propagator for the page: loaded on the first clip, reused
(reset) for every later one, and used by one clip at a time (its lock), whatever the page's
``concurrency_limit``; the page also queues the Track event with the other engine events.

What a request gets (:func:`track_clip`): the annotated clip as an **H.264** mp4 (``yuv420p``,
``faststart``; written by PyAV's libx264, so that browsers play it: OpenCV's ``mp4v``, what
``grounded-sam track`` writes, does not play in Chromium), the per-frame JSON and the
MOT text of :mod:`grounded_sam.video.writers`. When this PyAV has no H.264 encoder the clip
is written as ``mp4v`` instead and the status line says that it is for download only. Each
file is written under a temporary name and moved into place at the end (a failed run leaves
no half-written file).

Limits (one clip costs one key-frame grounding per ``every`` frames plus one propagation per
track per frame, and the page runs one engine request at a time): at most
:data:`MAX_VIDEO_FRAMES` frames are tracked per request (the *Max frames* slider; a longer
clip is tracked from its start and the status line says how much), frames up to
:data:`MAX_VIDEO_SIDE` px on the longer side, clips up to :data:`MAX_CLIP_FRAMES` frames in
all. Anything else wrong (not a video, no frames, bad knobs) is a :class:`UserError` whose
message says what to do.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from grounded_sam.app.session import EMPTY_PHRASE, UserError, md
from grounded_sam.errors import ModelLoadError
from grounded_sam.export.files import current_umask, safe_name
from grounded_sam.inputs import parse_prompt

if TYPE_CHECKING:
    from grounded_sam.video.api import Engine
    from grounded_sam.video.types import Propagator

__all__ = [
    "DEFAULT_VIDEO_FRAMES",
    "MAX_CLIP_FRAMES",
    "MAX_VIDEO_FRAMES",
    "MAX_VIDEO_SIDE",
    "NO_VIDEO",
    "BrowserVideoWriter",
    "VideoOutput",
    "VideoTracking",
    "h264_available",
    "track_clip",
]

logger = logging.getLogger(__name__)

#: Most frames one request tracks (the top of the page's *Max frames* slider).
MAX_VIDEO_FRAMES = 300
#: The *Max frames* slider's start.
DEFAULT_VIDEO_FRAMES = 100
#: Largest accepted frame side in pixels (1080p fits; larger clips are refused).
MAX_VIDEO_SIDE = 1920
#: Longest accepted clip in frames (10 minutes at 30 fps), tracked or not.
MAX_CLIP_FRAMES = 18_000

NO_VIDEO = "No video yet: upload a short clip (mp4, webm, mov, avi, mkv) first."
CLIP_FORMATS = "Upload an mp4, webm, mov, avi or mkv clip."


def h264_available() -> bool:
    """Whether PyAV is installed with an H.264 encoder (libx264)."""
    try:
        import av

        av.codec.Codec("libx264", "w")
    except Exception:  # noqa: BLE001  (ImportError, av's UnknownCodecError, ...)
        return False
    return True


class BrowserVideoWriter:
    """RGB frames into an H.264 mp4 that browsers play, under a temporary name until closed.

    ``yuv420p`` needs even sides, so an odd last row / column is repeated once.

    Args:
        path: The final ``.mp4`` path.
        size: (H, W) of the frames.
        fps: Frame rate.

    Raises:
        OSError: The file cannot be written, or PyAV has no H.264 encoder.
    """

    def __init__(self, path: str | os.PathLike, size: tuple[int, int], fps: float) -> None:
        import av

        self.path = Path(path)
        self.size = size
        fd, name = tempfile.mkstemp(
            prefix=f".{self.path.name}.", suffix=".tmp.mp4", dir=self.path.parent
        )
        os.close(fd)
        self._tmp: Path | None = Path(name)
        h, w = size
        try:
            self._container = av.open(str(self._tmp), "w", format="mp4",
                                      options={"movflags": "+faststart"})  # fmt: skip
            rate = Fraction(float(fps)).limit_denominator(1001)
            self._stream = self._container.add_stream("libx264", rate=rate)
            self._stream.width, self._stream.height = w + w % 2, h + h % 2
            self._stream.pix_fmt = "yuv420p"
            self._stream.options = {"crf": "23", "preset": "veryfast"}
        except Exception as exc:
            self.abort()
            raise OSError(f"Cannot write an H.264 mp4 ({w}x{h}, {fps:g} fps): {exc}") from exc

    def write(self, bgr: np.ndarray) -> None:
        """Add one (H, W, 3) uint8 **BGR** frame (what the annotator draws)."""
        import av

        h, w = self.size
        if h % 2 or w % 2:
            bgr = np.pad(bgr, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(bgr), format="bgr24")
        for packet in self._stream.encode(frame):
            self._container.mux(packet)

    def close(self) -> Path:
        """Flush, close and move the file onto its final name; returns that name."""
        try:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
            self._container.close()
            self._container = None
            tmp, self._tmp = self._tmp, None
            if tmp is None:
                raise OSError(f"{self.path} was closed before.")
            os.chmod(tmp, 0o666 & ~current_umask())
            os.replace(tmp, self.path)
        except BaseException:
            self.abort()
            raise
        return self.path

    def abort(self) -> None:
        """Delete the temporary file (the final name is left as it was)."""
        container = getattr(self, "_container", None)
        if container is not None:
            try:
                container.close()
            except Exception:  # noqa: BLE001  (closing a half-written container)
                pass
            self._container = None
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)
            self._tmp = None


class VideoTracking:
    """The page's video tracking: its engine plus one propagator, one clip at a time.

    Args:
        gs: The page's engine (grounds the key frames).
        propagator: A SAM 2.1 checkpoint (Hub id, alias ``sam2.1_t`` / ``sam2.1_s`` /
            ``sam2.1_b+`` / ``sam2.1_l``, or a folder) or a SAM 3 one (its tracker;
            ``grounded-sam app --propagator``), or a ready
            :class:`~grounded_sam.video.types.Propagator`; None: the engine's own SAM, which
            must then be SAM 2.1 (its image encoder is shared) or SAM 3 (its tracker).
    """

    def __init__(self, gs: Engine, propagator: Any = None) -> None:
        self.gs = gs
        self._given = propagator
        self._prop: Propagator | None = None
        if propagator is not None and not isinstance(propagator, (str, os.PathLike)):
            self._prop = propagator
        self._lock = threading.Lock()

    @property
    def propagator_id(self) -> str:
        """What the propagator is loaded from (the engine's SAM when none was given)."""
        if self._given is None:
            return str(self.gs.model_ids[0])
        if isinstance(self._given, (str, os.PathLike)):
            return os.fspath(self._given)
        return type(self._given).__name__

    def unavailable(self) -> str | None:
        """Why this page cannot track: no propagator given and its SAM cannot propagate.

        A SAM 2 / 2.1 engine propagates with its own checkpoint's video predictor, and so does
        a SAM 3 engine with SAM 3's tracker where ``engine_propagator`` supports that (where
        it does not, the first clip's Track says so).
        """
        from grounded_sam.video.api import engine_propagates

        if self._given is not None or engine_propagates(self.gs):
            return None
        sam = self.gs.model_ids[0] or "unnamed"
        return (
            f"Video tracking propagates masks with SAM 2.1's video predictor or SAM 3's tracker, "
            f"and this app's SAM ({sam}) is neither: start the app with --propagator sam2.1_t "
            "(or sam2.1_s, sam2.1_b+, sam2.1_l, a local SAM 2.1 folder, or sam3), or with --sam "
            "sam2.1_t or --sam sam3."
        )

    def _propagator(self, on_progress: Callable[[float, str], None] | None) -> Propagator:
        """The propagator, loaded on first use (caller holds the lock)."""
        if self._prop is None:
            from grounded_sam.video.api import engine_propagator

            if on_progress is not None:
                on_progress(0.0, f"Loading the video propagator ({self.propagator_id})")
            try:
                self._prop = engine_propagator(self.gs, self._given)
            except (ModelLoadError, ValueError) as exc:
                raise UserError(
                    f"{exc} (start the app with --propagator and a SAM 2.1 or SAM 3 checkpoint "
                    "that loads here, e.g. --propagator sam2.1_t)"
                ) from None
        return self._prop


@dataclass(frozen=True)
class VideoOutput:
    """One tracked clip's files and the status line the page shows.

    Attributes:
        video: The annotated clip (H.264 mp4 when ``playable``, else OpenCV's mp4v).
        json: Per-frame tracks (:mod:`grounded_sam.video.writers` documents the schema).
        mot: MOTChallenge text.
        playable: Whether browsers play ``video`` (H.264).
        status: Markdown: what was tracked, how long it took.
        frames: Frames tracked.
        tracks: Tracks started.
    """

    video: Path
    json: Path
    mot: Path
    playable: bool
    status: str
    frames: int
    tracks: int


def _plain(exc: BaseException, path: Path) -> str:
    """An exception message naming the upload by its name, never its server-side path."""
    text = str(exc).replace(str(path), path.name)
    return text if text.startswith(path.name) else f"{path.name}: {text}"


def _knob(value: Any, name: str, low: int, high: int) -> int:
    """A slider's whole number in [low, high], or a UserError naming the knob."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise UserError(f"{name} must be a whole number from {low} to {high}, got {value!r}.")
    return value


def check_clip(path: str | os.PathLike | None) -> tuple[int | None, tuple[int, int], float]:
    """Open an uploaded clip and check it against the limits (module docstring).

    Returns:
        ``(frame_count, (H, W), fps)``; the frame count is None when the file does not say.

    Raises:
        UserError: No clip, not a readable video, no frames, too large or too long.
    """
    from grounded_sam.video.reader import open_video

    if path is None or str(path) == "":
        raise UserError(NO_VIDEO)
    path = Path(path)
    try:
        reader = open_video(path)
    except (ValueError, OSError, EOFError) as exc:  # PyAV's EOFError: a clip with no frames
        if "no frames" in str(exc) or isinstance(exc, EOFError):
            raise UserError(
                f"'{path.name}' has no frames that can be decoded (an empty or broken video): "
                f"check that it plays. {CLIP_FORMATS}"
            ) from None
        raise UserError(
            f"Could not read '{path.name}' as a video (OpenCV and PyAV cannot decode it). "
            f"{CLIP_FORMATS}"
        ) from None
    reader.close()
    (h, w), count = reader.size, reader.frame_count
    if max(h, w) > MAX_VIDEO_SIDE:
        raise UserError(
            f"'{path.name}' is {w}×{h} px; the limit is {MAX_VIDEO_SIDE} px on the longer side. "
            "Downscale it (e.g. ffmpeg -i in.mp4 -vf scale=1280:-2 out.mp4) and upload it again."
        )
    if count is not None and count > MAX_CLIP_FRAMES:
        raise UserError(
            f"'{path.name}' has {count} frames; the app takes clips of up to {MAX_CLIP_FRAMES} "
            f"frames and tracks at most {MAX_VIDEO_FRAMES} of them. Trim it (e.g. ffmpeg -i "
            "in.mp4 -t 10 out.mp4), or track the whole video with grounded-sam track."
        )
    return count, (h, w), reader.fps


def track_clip(
    tracking: VideoTracking,
    path: str | os.PathLike | None,
    prompt: str | None,
    *,
    every: Any = 10,
    max_frames: Any = DEFAULT_VIDEO_FRAMES,
    threshold: Any = None,
    out_dir: str | os.PathLike,
    opacity: float = 0.5,
    on_progress: Callable[[float, str], None] | None = None,
) -> VideoOutput:
    """Track the phrases through an uploaded clip and write its three files into ``out_dir``.

    Args:
        tracking: The page's :class:`VideoTracking`.
        path: The uploaded clip (a file in gradio's upload cache).
        prompt: Comma-separated phrases, as typed.
        every: Ground the phrases on frame 0 and every ``every`` frames (1 to 1000).
        max_frames: Track at most this many frames from the start (1 to
            :data:`MAX_VIDEO_FRAMES`).
        threshold: Minimum confidence of a key-frame detection (None: the engine's).
        out_dir: Folder for the files (``STEM_tracked.mp4``, ``STEM.json``, ``STEM.mot.txt``);
            files of earlier clips in it are deleted once the new ones are written.
        opacity: Mask fill opacity of the annotated clip.
        on_progress: Called with ``(fraction done, description)`` while it runs.

    Returns:
        The :class:`VideoOutput`.

    Raises:
        UserError: The page cannot track (no SAM 2.1), no clip, a bad clip, phrase or knob,
            or the propagator does not load; the message says what to do.
    """
    from grounded_sam.video.api import track
    from grounded_sam.video.types import TrackerSettings
    from grounded_sam.video.writers import TrackWriter, annotate_tracks

    why = tracking.unavailable()
    if why:
        raise UserError(why)
    if path is None or str(path) == "":
        raise UserError(NO_VIDEO)
    if prompt is None or not str(prompt).replace(",", " ").strip():
        raise UserError(EMPTY_PHRASE)
    try:
        phrases = parse_prompt(str(prompt))
    except (TypeError, ValueError) as exc:
        raise UserError(str(exc) or EMPTY_PHRASE) from None
    every = _knob(every, "Key-frame interval", 1, 1000)
    max_frames = _knob(max_frames, "Max frames", 1, MAX_VIDEO_FRAMES)
    gs = tracking.gs
    try:
        options = gs.options if threshold is None else gs.options.replace(threshold=threshold)
    except (TypeError, ValueError) as exc:
        raise UserError(str(exc)) from None
    if options.per_image:  # the engine's defaults never hold points, but be explicit
        raise UserError("Tracking takes phrases only.")
    count, (h, w), _ = check_clip(path)
    path = Path(path)
    settings = TrackerSettings(every=every)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = safe_name(path.stem or "video")
    total = min(count, max_frames) if count else max_frames
    playable = h264_available()
    t0 = time.perf_counter()
    # One clip at a time: a second Track gets a message instead of holding a slot of the
    # page's engine queue (shared with the image tab) until the first clip is done.
    if not tracking._lock.acquire(blocking=False):
        raise UserError("Another clip is being tracked on this page; try again when it is done.")
    try:
        prop = tracking._propagator(on_progress)
        try:
            run = track(gs, path, phrases, settings=settings, max_frames=max_frames,
                        propagator=prop, options=options)  # fmt: skip
        except (ValueError, OSError) as exc:
            raise UserError(_plain(exc, path)) from None
        header = {
            "video": path.name,  # the upload's name, never a server path
            "width": w,
            "height": h,
            "fps": run.reader.fps,
            "prompt": str(prompt),
            "phrases": phrases,
            "models": {
                "sam": gs.model_ids[0],
                "clip": None if getattr(gs, "grounds_text", False) else gs.model_ids[1],
                "propagator": tracking.propagator_id,
            },
            "settings": settings.as_dict(),
            "threshold": options.threshold,
        }
        browser: BrowserVideoWriter | None = None
        try:
            with TrackWriter(out, stem, (h, w), run.reader.fps, header, opacity=opacity,
                             video=not playable) as writer:  # fmt: skip
                if playable:
                    browser = BrowserVideoWriter(
                        out / f"{stem}_tracked.mp4", (h, w), run.reader.fps
                    )
                for index, frame, dets in run.with_frames():
                    writer.write(index, frame, dets)
                    if browser is not None:
                        browser.write(annotate_tracks(frame, dets, opacity))
                    if on_progress is not None:
                        on_progress(
                            min((index + 1) / total, 1.0), f"Tracking: frame {index + 1} of {total}"
                        )
                stats = run.stats
                tracks = [t.summary() for t in run.tracker.tracks.values()]
                clip = None
                if browser is not None:  # the encoder's flush first: it is what may fail
                    clip, browser = browser.close(), None
                written = writer.close({"tracks": tracks, "stats": vars(stats).copy()})
                if clip is not None:
                    written["video"] = clip
        except (ValueError, EOFError) as exc:  # a frame that cannot be decoded or changes size
            raise UserError(_plain(exc, path)) from None
        except (MemoryError, RuntimeError) as exc:  # RuntimeError: torch's OutOfMemoryError
            if not isinstance(exc, MemoryError) and "out of memory" not in str(exc).lower():
                raise
            raise UserError(
                f"Out of memory while tracking {path.name}: lower Max frames, raise Every, or "
                "upload a smaller clip."
            ) from None
        finally:
            run.close()
            if browser is not None:
                browser.abort()
    finally:
        tracking._lock.release()
    seconds = time.perf_counter() - t0
    _remove_others(out, set(written.values()))
    return VideoOutput(
        video=written["video"],
        json=written["json"],
        mot=written["mot"],
        playable=playable,
        status=_status(path.name, phrases, stats, count, max_frames, tracks, seconds, playable),
        frames=stats.frames,
        tracks=stats.tracks_started,
    )


def _remove_others(out: Path, keep: set[Path]) -> None:
    """Delete earlier clips' files from the folder (gradio serves its own cached copies)."""
    for p in out.iterdir():
        if p not in keep and not p.name.startswith("."):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)


def _status(
    name: str,
    phrases: list[str],
    stats: Any,
    count: int | None,
    max_frames: int,
    tracks: list[dict],
    seconds: float,
    playable: bool,
) -> str:
    """The status line of a tracked clip."""
    per_label = ", ".join(
        f"{md(p)}: {sum(1 for t in tracks if t.get('label') == p)}" for p in phrases
    )
    n = stats.tracks_started
    line = (
        f"Tracked **{md(name)}**: {stats.frames} frame{'s' if stats.frames != 1 else ''}, "
        f"{n} track{'s' if n != 1 else ''} ({per_label}), {stats.key_frames} key frame"
        f"{'s' if stats.key_frames != 1 else ''}, in {seconds:.1f} s "
        f"({stats.frames / max(seconds, 1e-9):.1f} frames/s)."
    )
    if count is not None and count > stats.frames and stats.frames == max_frames:
        line += (
            f" The clip has {count} frames: the first {max_frames} were tracked (raise *Max "
            f"frames*, up to {MAX_VIDEO_FRAMES}, or track the whole clip with grounded-sam track)."
        )
    if n == 0:
        line += " Nothing was found: try a lower threshold or another phrase."
    if not playable:
        line += (
            " This server's PyAV has no H.264 encoder, so the clip is OpenCV's mp4v, which "
            "browsers do not play: download it."
        )
    return line
