"""Synthetic videos with known objects: coloured shapes that move, appear and disappear.

For oracle tests (a stand-in grounder and propagator that know the objects), memory
measurements over long videos, benchmarks and demos without any video file. Every frame is
computed from the frame index alone, so a video of any length streams in constant memory.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["MovingObject", "SyntheticVideo", "demo_video"]


@dataclass(frozen=True)
class MovingObject:
    """One object of a synthetic video.

    Attributes:
        label: Its class name (what a stand-in grounder calls it).
        shape: ``"box"`` (a square) or ``"disc"``.
        color: RGB fill.
        radius: Half-side of the square / radius of the disc, in pixels.
        start: Centre (x, y) on frame ``first``.
        velocity: Pixels per frame (x, y); the centre bounces off the frame's borders.
        first: First frame it is in.
        last: Last frame it is in (inclusive; None: to the end).
    """

    label: str
    shape: str
    color: tuple[int, int, int]
    radius: int
    start: tuple[float, float]
    velocity: tuple[float, float]
    first: int = 0
    last: int | None = None

    def visible(self, t: int) -> bool:
        """Whether it is in frame ``t``."""
        return t >= self.first and (self.last is None or t <= self.last)

    def centre(self, t: int, size: tuple[int, int]) -> tuple[float, float]:
        """Its centre (x, y) on frame ``t`` of a (H, W) video (bouncing off the borders)."""
        h, w = size
        out = []
        for p0, v, extent in zip(self.start, self.velocity, (w, h), strict=True):
            lo, hi = self.radius, extent - 1 - self.radius
            span = max(hi - lo, 1e-6)
            p = (p0 - lo + v * (t - self.first)) % (2 * span)
            out.append(lo + (p if p <= span else 2 * span - p))
        return out[0], out[1]

    def mask(self, t: int, size: tuple[int, int]) -> np.ndarray:
        """(H, W) bool mask on frame ``t`` (all False when not visible)."""
        h, w = size
        if not self.visible(t):
            return np.zeros((h, w), bool)
        cx, cy = self.centre(t, size)
        ys, xs = np.ogrid[:h, :w]
        if self.shape == "disc":
            return (xs - cx) ** 2 + (ys - cy) ** 2 <= self.radius**2
        return (np.abs(xs - cx) <= self.radius) & (np.abs(ys - cy) <= self.radius)


@dataclass(frozen=True)
class SyntheticVideo:
    """A video of moving shapes on a textured background, computed frame by frame.

    Later objects are drawn over earlier ones where they overlap; ``masks`` gives each
    object's visible (unoccluded) pixels.

    Attributes:
        objects: The objects.
        size: (H, W) of every frame.
        num_frames: Length.
        fps: Frame rate (for writing a file).
    """

    objects: tuple[MovingObject, ...]
    size: tuple[int, int] = (120, 160)
    num_frames: int = 30
    fps: float = 10.0

    def background(self) -> np.ndarray:
        """(H, W, 3) uint8: a soft diagonal gradient (not flat, so encoders see texture)."""
        h, w = self.size
        ys, xs = np.mgrid[:h, :w]
        g = 90 + 40 * (xs / max(w - 1, 1)) + 30 * (ys / max(h - 1, 1))
        return np.repeat(g[..., None], 3, axis=2).astype(np.uint8)

    def frame(self, t: int) -> np.ndarray:
        """(H, W, 3) uint8 RGB frame ``t``."""
        img = self.background()
        for obj in self.objects:
            img[obj.mask(t, self.size)] = obj.color
        return img

    def masks(self, t: int) -> dict[int, np.ndarray]:
        """``{object index: (H, W) bool}`` of the objects visible in frame ``t``."""
        out: dict[int, np.ndarray] = {}
        taken = np.zeros(self.size, bool)
        for i in reversed(range(len(self.objects))):  # the last drawn is on top
            m = self.objects[i].mask(t, self.size) & ~taken
            if m.any():
                out[i] = m
                taken |= m
        return dict(sorted(out.items()))

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        """``(index, frame)`` for every frame."""
        for t in range(self.num_frames):
            yield t, self.frame(t)

    def __len__(self) -> int:
        return self.num_frames

    def write(self, path: str | os.PathLike) -> Path:
        """Write it as an ``.mp4`` file, or as a folder of frames.

        A path with a suffix gets an mp4 (OpenCV, ``mp4v``); one without, ``frame_NNNNN.png``
        files.

        Returns:
            The path written.
        """
        import cv2

        path = Path(path)
        h, w = self.size
        if path.suffix:
            path.parent.mkdir(parents=True, exist_ok=True)
            writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (w, h))
            if not writer.isOpened():
                raise OSError(f"OpenCV cannot write {path}.")
            try:
                for _, frame in self:
                    writer.write(np.ascontiguousarray(frame[..., ::-1]))
            finally:
                writer.release()
            return path
        path.mkdir(parents=True, exist_ok=True)
        for t, frame in self:
            cv2.imwrite(str(path / f"frame_{t:05d}.png"), np.ascontiguousarray(frame[..., ::-1]))
        return path


def demo_video(num_frames: int = 30, size: tuple[int, int] = (120, 160)) -> SyntheticVideo:
    """Three moving objects, one entering and one leaving.

    A red box and a blue disc from the start, a green box that enters at frame
    ``num_frames // 3``; the blue disc leaves after frame ``2 * (num_frames // 3)``.
    """
    h, w = size
    r = max(4, min(h, w) // 10)
    third = max(1, num_frames // 3)
    objects = (
        MovingObject("red box", "box", (220, 40, 40), r, (w * 0.25, h * 0.3), (1.5, 0.7)),
        MovingObject(
            "blue disc", "disc", (40, 60, 220), r, (w * 0.7, h * 0.7), (-1.2, -0.5), 0, 2 * third
        ),
        MovingObject("green box", "box", (40, 200, 60), r, (w * 0.5, h * 0.5), (0.8, -1.1), third),
    )
    return SyntheticVideo(objects, size, num_frames)
