"""Known detections for export tests: a stand-in engine that 'finds' fixed shapes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import supervision as sv
from PIL import Image

from grounded_sam.results import make_detections

CLASSES = ["date", "fig", "hazelnut"]


def scene_detections(h: int, w: int, phrases: list[str]) -> sv.Detections:
    """Three instances: a solid box, a ring (mask with a hole) and two blobs (two parts)."""
    masks = np.zeros((3, h, w), dtype=bool)
    masks[0, 5:25, 5:35] = True
    masks[1, h // 2 - 15 : h // 2 + 15, w // 2 - 15 : w // 2 + 15] = True
    masks[1, h // 2 - 5 : h // 2 + 5, w // 2 - 5 : w // 2 + 5] = False
    masks[2, h - 20 : h - 8, 4:16] = True
    masks[2, h - 20 : h - 8, w - 16 : w - 4] = True
    xyxy = []
    for m in masks:
        ys, xs = np.nonzero(m)
        xyxy.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    class_id = np.array([0, 1, 2 % len(phrases)]) % len(phrases)
    return make_detections(
        masks=masks,
        xyxy=np.array(xyxy, dtype=np.float32),
        confidence=np.array([0.9, 0.75, 0.6], dtype=np.float32),
        class_id=class_id,
        phrases=phrases,
        clip_score=np.array([0.31, 0.28, 0.25], dtype=np.float32),
        sam_iou=np.array([0.95, 0.9, 0.85], dtype=np.float32),
    )


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
