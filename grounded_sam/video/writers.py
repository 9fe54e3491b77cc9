"""The result files of a tracked video: per-frame JSON, MOT text and an annotated mp4.

:class:`TrackWriter` streams each frame's result into three files as it comes, each under a
temporary name in the output folder (``.NAME.XXXX.tmp...``), and moves them onto their final
names only when the whole video is done (:meth:`TrackWriter.close`). If tracking fails or is
interrupted, the temporary files are deleted (:meth:`TrackWriter.abort`, or leaving the
``with`` block by an exception): a final name holds a complete file from a finished run, or
what was there before, never a half-written one.

Files, for a video whose stem is ``STEM``:

``STEM.json``
    One document::

        {"video": "clip.mp4", "width": W, "height": H, "fps": 30.0, "prompt": "person, car",
         "phrases": ["person", "car"], "models": {"sam": ..., "clip": ..., "propagator": ...},
         "settings": {"every": 10, "match_iou": 0.5, ...},
         "frames": [{"frame": 0, "num_instances": N, "instances": [record, ...]}, ...],
         "num_frames": T, "tracks": [{"track_id": 1, "label": "person", "class_id": 0,
         "first_frame": 0, "last_seen": 41, "ended": 57}, ...], "stats": {...}}

    A record is the ``segment`` command's instance record
    (:func:`grounded_sam.export.records.detections_to_records`: label, class_id, confidence,
    box xyxy pixels, area, mask as COCO RLE) plus ``track_id``, ``object_score`` (SAM 2's,
    0-1) and ``grounded`` (whether this frame's grounding matched or started it).
``STEM.mot.txt``
    MOTChallenge text, one line per track per frame:
    ``frame,id,bb_left,bb_top,bb_width,bb_height,conf,-1,-1,-1`` with 1-based frame numbers
    (as MOT tools and ``supervision``'s MOT readers expect), boxes in pixels.
``STEM_tracked.mp4``
    The video with masks, boxes and ``label #id confidence`` drawn by supervision's
    annotators, coloured by track id (OpenCV, ``mp4v`` codec).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import numpy as np
import supervision as sv

from grounded_sam.export.annotate import draw_bgr
from grounded_sam.export.files import current_umask
from grounded_sam.export.records import detections_to_records, jsonable

__all__ = ["TrackWriter", "annotate_tracks", "mot_box", "mot_lines", "track_labels"]

logger = logging.getLogger(__name__)


def track_labels(dets: sv.Detections) -> list[str]:
    """``"label #id confidence"`` per detection (``"car #3 0.82"``)."""
    names = dets.data.get("class_name") if dets.data else None
    out = []
    for i in range(len(dets)):
        name = str(names[i]) if names is not None and len(names) == len(dets) else "object"
        tid = "" if dets.tracker_id is None else f" #{int(dets.tracker_id[i])}"
        conf = ""
        if dets.confidence is not None and np.isfinite(dets.confidence[i]):
            conf = f" {float(dets.confidence[i]):.2f}"
        out.append(f"{name}{tid}{conf}")
    return out


def annotate_tracks(frame: np.ndarray, dets: sv.Detections, opacity: float = 0.5) -> np.ndarray:
    """Masks, boxes and ``label #id confidence`` on a copy of a frame, coloured by track id.

    Args:
        frame: (H, W, 3) uint8 RGB.
        dets: The frame's tracks (``tracker_id`` set).
        opacity: Mask fill opacity in [0, 1].

    Returns:
        (H, W, 3) uint8 **BGR** (what OpenCV's video writer takes).
    """
    scene = np.ascontiguousarray(frame[..., ::-1])
    return np.ascontiguousarray(draw_bgr(scene, dets, opacity, track_labels(dets)))


def mot_box(xyxy: Any) -> str:
    """MOTChallenge's box columns ``bb_left,bb_top,bb_width,bb_height`` of an xyxy pixel box.

    Args:
        xyxy: ``(x1, y1, x2, y2)`` in pixels (x2/y2 exclusive, as the tight mask boxes).

    Returns:
        ``"x1,y1,w,h"`` with two decimals.
    """
    x1, y1, x2, y2 = (float(v) for v in xyxy)
    return f"{x1:.2f},{y1:.2f},{x2 - x1:.2f},{y2 - y1:.2f}"


def mot_lines(index: int, dets: sv.Detections) -> str:
    """MOTChallenge lines of one frame (``index`` 0-based; written 1-based)."""
    lines = []
    for i in range(len(dets)):
        conf = 1.0 if dets.confidence is None else float(dets.confidence[i])
        tid = int(dets.tracker_id[i]) if dets.tracker_id is not None else -1
        lines.append(f"{index + 1},{tid},{mot_box(dets.xyxy[i])},{conf:.4f},-1,-1,-1\n")
    return "".join(lines)


class TrackWriter:
    """Streams a tracked video's results into its three files (see the module docstring).

    Args:
        out: Output folder (created).
        stem: File stem (``STEM.json``, ``STEM.mot.txt``, ``STEM_tracked.mp4``).
        size: (H, W) of the frames.
        fps: Frame rate of the annotated video.
        header: Top-level JSON fields written before ``"frames"`` (video, prompt, models...).
        opacity: Mask fill opacity of the annotated video.
        video: Write the annotated video (False: only JSON and MOT).

    Raises:
        OSError: The folder or a temporary file cannot be written, or OpenCV cannot encode
            mp4 here.
    """

    def __init__(
        self,
        out: str | os.PathLike,
        stem: str,
        size: tuple[int, int],
        fps: float,
        header: dict[str, Any],
        *,
        opacity: float = 0.5,
        video: bool = True,
    ) -> None:
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.size = size
        self.opacity = opacity
        self.paths = self.output_paths(self.out, stem, video)
        self._tmp: dict[str, Path] = {}
        self._files: dict[str, IO[str]] = {}
        self._video: Any = None
        self._frames = 0
        try:
            for key in ("json", "mot"):
                self._tmp[key] = self._temp(self.paths[key])
                self._files[key] = open(self._tmp[key], "w", encoding="utf-8")  # noqa: SIM115
            head = json.dumps(jsonable(header), allow_nan=False)[:-1]
            self._files["json"].write(head + (", " if header else "") + '"frames": [\n')
            if video:
                self._tmp["video"] = self._temp(self.paths["video"])
                self._video = self._open_video(self._tmp["video"], fps)
        except BaseException:
            self.abort()
            raise

    @staticmethod
    def output_paths(out: str | os.PathLike, stem: str, video: bool = True) -> dict[str, Path]:
        """The final files of a writer: ``{"json": ..., "mot": ..., "video": ...}``.

        A writer replaces these atomically when it closes (an earlier run's files stay as
        they were until then); ``grounded-sam track --skip-existing`` checks them first.
        """
        out = Path(out)
        paths = {"json": out / f"{stem}.json", "mot": out / f"{stem}.mot.txt"}
        if video:
            paths["video"] = out / f"{stem}_tracked.mp4"
        return paths

    def _temp(self, final: Path) -> Path:
        suffix = ".tmp.mp4" if final.suffix == ".mp4" else ".tmp"
        fd, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=suffix, dir=self.out)
        os.close(fd)
        return Path(name)

    def _open_video(self, path: Path, fps: float) -> Any:
        import cv2

        h, w = self.size
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (w, h))
        if not writer.isOpened():
            raise OSError(f"OpenCV cannot encode an mp4 video at {path} ({w}x{h}, {fps} fps).")
        return writer

    def write(self, index: int, frame: np.ndarray, dets: sv.Detections) -> None:
        """Add one frame: its JSON entry, its MOT lines and its annotated picture.

        Args:
            index: Frame index (0-based).
            frame: (H, W, 3) uint8 RGB.
            dets: Its tracks (from the tracker).
        """
        records = detections_to_records(dets, self.size)
        extra = {
            "track_id": dets.tracker_id,
            "object_score": dets.data.get("object_score"),
            "grounded": dets.data.get("grounded"),
        }
        for i, rec in enumerate(records):
            for key, values in extra.items():
                if values is not None and len(values) == len(records):
                    rec[key] = jsonable(values[i])
        entry = {"frame": int(index), "num_instances": len(records), "instances": records}
        sep = ",\n" if self._frames else ""
        self._files["json"].write(sep + json.dumps(entry, allow_nan=False))
        self._files["mot"].write(mot_lines(index, dets))
        if self._video is not None:
            self._video.write(annotate_tracks(frame, dets, self.opacity))
        self._frames += 1

    def close(self, footer: dict[str, Any] | None = None) -> dict[str, Path]:
        """Finish the files and move them onto their final names.

        Args:
            footer: Top-level JSON fields written after ``"frames"`` (tracks, stats).

        Returns:
            ``{"json": path, "mot": path, "video": path}`` (no ``"video"`` without video).
        """
        try:
            tail = {"num_frames": self._frames, **(footer or {})}
            body = json.dumps(jsonable(tail), allow_nan=False)[1:]
            self._files["json"].write("\n], " + body + "\n")
            for f in self._files.values():
                f.close()
            if self._video is not None:
                self._video.release()
                self._video = None
            mode = 0o666 & ~current_umask()
            for key, tmp in self._tmp.items():
                os.chmod(tmp, mode)
                os.replace(tmp, self.paths[key])
            self._tmp.clear()
        except BaseException:
            self.abort()
            raise
        return dict(self.paths)

    def abort(self) -> None:
        """Delete the temporary files; the final names are left as they were."""
        for f in self._files.values():
            f.close()
        self._files.clear()
        if self._video is not None:
            self._video.release()
            self._video = None
        for tmp in self._tmp.values():
            tmp.unlink(missing_ok=True)
        self._tmp.clear()

    def __enter__(self) -> TrackWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None or self._tmp:
            self.abort()
