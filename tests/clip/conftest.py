"""Fixtures for the CLIP tests: one tiny random open_clip model, loaded the way users load CLIP.

The model is written by ``save_tiny_clip`` into a session temp dir and loaded with
``load_clip("local-dir:...")``, the code users hit. Images are synthetic, plus one real COCO
photo from ``../shared/data`` next to the repo when present (skipped cleanly otherwise).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from grounded_sam.clip import ClipScorer, CropSettings, load_clip, save_tiny_clip

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"  # ../shared/data
PHOTO_DIR = SHARED_DATA / "coco-val-mini" / "images"


@pytest.fixture(scope="session")
def tiny_clip_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Directory holding the tiny open_clip model (open_clip_config.json + safetensors)."""
    return save_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


@pytest.fixture(scope="session")
def _session_scorer(tiny_clip_path: Path) -> ClipScorer:
    return load_clip(f"local-dir:{tiny_clip_path}", device="cpu")


@pytest.fixture
def scorer(_session_scorer: ClipScorer) -> Iterator[ClipScorer]:
    """The tiny scorer (CPU, float32); crop settings and batch size are reset after each test."""
    yield _session_scorer
    _session_scorer.crop_settings = CropSettings()
    _session_scorer.batch_size = 64


def smooth_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """(H, W, 3) uint8: smooth random colours plus a few hard-edged shapes."""
    rng = np.random.default_rng(seed)
    coarse = torch.from_numpy(rng.uniform(0, 255, (1, 3, 6, 8)).astype(np.float32))
    image = torch.nn.functional.interpolate(
        coarse, size=(height, width), mode="bicubic", align_corners=False
    )[0]
    image = image.clamp(0, 255).permute(1, 2, 0).numpy().astype(np.uint8)
    yy, xx = np.mgrid[0:height, 0:width]
    for _ in range(6):
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        r = rng.uniform(0.05, 0.2) * min(height, width)
        image[(xx - cx) ** 2 + (yy - cy) ** 2 < r**2] = rng.integers(0, 256, 3)
    for _ in range(4):
        x0, y0 = rng.integers(0, width - 10), rng.integers(0, height - 10)
        dy, dx = rng.integers(5, 60, 2)
        image[y0 : y0 + dy, x0 : x0 + dx] = rng.integers(0, 256, 3)
    texture = rng.integers(-8, 9, image.shape)  # fine texture: exercises antialiasing
    return np.clip(image.astype(np.int64) + texture, 0, 255).astype(np.uint8)


def random_boxes(height: int, width: int, n: int, seed: int = 0) -> torch.Tensor:
    """(n, 4) float32 xyxy boxes of varied size; some cross the image border."""
    rng = np.random.default_rng(seed)
    w = rng.uniform(12, 0.6 * width, n)
    h = np.clip(w * rng.uniform(0.4, 2.5, n), 10, 0.8 * height)
    x0 = rng.uniform(-0.15 * width, width - 0.85 * w)
    y0 = rng.uniform(-0.15 * height, height - 0.85 * h)
    return torch.tensor(np.stack([x0, y0, x0 + w, y0 + h], 1), dtype=torch.float32)


def ellipse_masks(
    boxes: torch.Tensor, image_hw: tuple[int, int], frame_hw: tuple[int, int], fill: float = 0.8
) -> torch.Tensor:
    """(n, h, w) bool ellipses inscribed in each box (scaled by ``fill``), in a low-res frame."""
    (img_h, img_w), (fh, fw) = image_hw, frame_hw
    yy, xx = np.mgrid[0:fh, 0:fw]
    masks = []
    for x0, y0, x1, y1 in boxes.numpy():
        cx, cy = (x0 + x1) / 2 * fw / img_w, (y0 + y1) / 2 * fh / img_h
        rx = max((x1 - x0) / 2 * fw / img_w * fill, 1.0)
        ry = max((y1 - y0) / 2 * fh / img_h * fill, 1.0)
        masks.append(((xx + 0.5 - cx) / rx) ** 2 + ((yy + 0.5 - cy) / ry) ** 2 <= 1.0)
    return torch.from_numpy(np.stack(masks))


def to_chw(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 array -> (3, H, W) uint8 tensor."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).contiguous()
