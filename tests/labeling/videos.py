"""Video labeling helpers: lossless synthetic clips and a stand-in engine that knows their colours.

The clips are FFV1 ``.avi`` files (lossless, so a frame decodes to the synthetic pixels and the
colour stand-ins of :mod:`tests.video.standins` find exactly the objects' visible pixels).
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np

from grounded_sam.grounding.options import QueryOptions
from grounded_sam.video.synthetic import MovingObject, SyntheticVideo, demo_video
from tests.video.standins import ColourGrounder, ColourPropagator

__all__ = [
    "CLASSES",
    "ColourEngine",
    "ResettingPropagator",
    "clips",
    "write_lossless",
]

CLASSES = ["red box", "blue disc", "green box"]


def write_lossless(video: SyntheticVideo, path: Path) -> Path:
    """Write ``video`` as an FFV1 ``.avi`` (lossless)."""
    import cv2

    h, w = video.size
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), video.fps, (w, h))
    assert writer.isOpened(), "OpenCV cannot write FFV1 here"
    for _, frame in video:
        writer.write(np.ascontiguousarray(frame[..., ::-1]))
    writer.release()
    return path


def clips() -> dict[str, SyntheticVideo]:
    """Two clips: the demo video (3 objects, one entering, one leaving) and a shorter one."""
    second = SyntheticVideo(
        (
            MovingObject("green box", "box", (40, 200, 60), 8, (30.0, 30.0), (2.0, 1.0)),
            MovingObject("red box", "box", (220, 40, 40), 8, (90.0, 60.0), (-1.5, 0.5)),
        ),
        size=(96, 128),
        num_frames=6,
    )
    return {"a.avi": demo_video(9), "sub/b.avi": second}


class ColourEngine:
    """Duck-typed engine for ``track``: ``query(index(frame), phrases, options)`` finds colours."""

    def __init__(self, phrases=CLASSES) -> None:
        objects = [o for v in clips().values() for o in v.objects]
        self.grounder = ColourGrounder(SimpleNamespace(objects=objects), phrases)
        self.options = QueryOptions()
        self.predictor = None
        self.model_ids = ("fake-sam", "fake-clip")
        self.indexed = 0

    def index(self, frame: np.ndarray) -> np.ndarray:
        self.indexed += 1
        return frame

    def query(self, index: np.ndarray, prompt, options=None, **knobs):
        self.grounder.calls = 0  # the same frame gives the same detection order in every run
        return self.grounder(index)


class ResettingPropagator(ColourPropagator):
    """The colour propagator, reset between videos (as SAM 2.1's); ``fail_at`` interrupts.

    Args:
        fail_at: ``(video number, frame index, exception)``: raise it on that step (video
            numbers count resets, from 0).
    """

    def __init__(self, fail_at=None) -> None:
        super().__init__()
        self.fail_at = fail_at
        self.video = -1

    def reset(self) -> None:
        fail_at, video = self.fail_at, self.video
        super().__init__()
        self.fail_at, self.video = fail_at, video + 1

    def step(self, index, frame):
        if self.fail_at is not None and self.fail_at[:2] == (self.video, index):
            raise self.fail_at[2]
        return super().step(index, frame)
