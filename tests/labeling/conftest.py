"""A stand-in engine that 'finds' fixed shapes, a small image folder, and run helpers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import supervision as sv
from PIL import Image

from grounded_sam import EverythingSettings
from grounded_sam.grounding.options import QueryOptions, query_fields
from grounded_sam.labeling import label_images, labeling_config, prepare_labeling
from tests.export.conftest import CLASSES, scene_detections

__all__ = ["CLASSES", "FakeEngine", "FakeIndex", "config", "run", "scene_detections"]

_KNOBS = {f.name for f in query_fields()}


def _split(kwargs: dict) -> tuple[QueryOptions | None, dict]:
    """Query knobs among ``kwargs`` as one QueryOptions (None when there are none)."""
    knobs = {k: kwargs.pop(k) for k in list(kwargs) if k in _KNOBS}
    return (QueryOptions().replace(**knobs) if knobs else None), kwargs


def config(**overrides: object) -> dict:
    """The run config of the fake models; query knobs among ``overrides`` go to options."""
    options, overrides = _split(dict(overrides))
    kwargs = {"sam": "fake-sam", "clip": "fake-clip", "proposal_settings": EverythingSettings()}
    kwargs.update(overrides)
    return labeling_config(CLASSES, options=options, **kwargs)


def run(engine: object, folder: Path, out: Path, fmt: str = "coco", **kwargs: object):
    """``label_images`` over ``folder`` (query knobs passed as its keyword knobs).

    Returns:
        ``(report, failures seen by on_failure)``.
    """
    images = prepare_labeling(folder, out)
    failures: list[tuple[str, str]] = []
    report = label_images(
        engine,
        folder,
        images,
        CLASSES,
        out,
        fmt,
        config=kwargs.pop("config", config()),
        progress=False,
        on_failure=lambda rel, why: failures.append((rel, why)),
        **kwargs,
    )
    return report, failures


class FakeIndex:
    def __init__(self, image: np.ndarray) -> None:
        self.image = image


class FakeEngine:
    """Duck-typed GroundedSAM: index() keeps the image, query() returns scene_detections."""

    def __init__(self) -> None:
        self.indexed = 0
        self.queries: list[list[str]] = []

    def index(self, image: np.ndarray) -> FakeIndex:
        self.indexed += 1
        return FakeIndex(image)

    def query(self, index: FakeIndex, prompt: list[str], **kwargs: object) -> sv.Detections:
        self.queries.append(list(prompt))
        h, w = index.image.shape[:2]
        return scene_detections(h, w, list(prompt))


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """4 readable images (nested folder, upper-case extension, a name clash) + 1 corrupt."""
    root = tmp_path / "images"
    (root / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)

    def save(rel: str, h: int, w: int) -> None:
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / rel)

    save("a.jpg", 64, 80)
    save("b.PNG", 72, 96)
    save("sub/a.png", 64, 64)
    save("sub/c.webp", 60, 90)
    (root / "sub" / "broken.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    (root / "notes.txt").write_text("not an image")
    return root
