"""Synthetic and real test images for the SAM tests (all non-square, (H, W, 3) uint8 RGB)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

DATA_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data"
PHOTO_DIR = DATA_DIR / "coco-val-mini" / "images"


def random_image(height: int = 120, width: int = 200, seed: int = 0) -> np.ndarray:
    """Uniform noise, (H, W, 3) uint8."""
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def shapes_image(height: int = 300, width: int = 170) -> np.ndarray:
    """A structured scene, (H, W, 3) uint8: gradient, a rectangle, a disc and stripes."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.stack([xx / width * 200, yy / height * 180, np.full_like(xx, 60.0)], axis=-1).astype(
        np.uint8
    )
    img[int(height * 0.15) : int(height * 0.45), int(width * 0.1) : int(width * 0.55)] = (
        230,
        40,
        40,
    )
    disc = (yy - height * 0.68) ** 2 + (xx - width * 0.62) ** 2 < (min(height, width) * 0.22) ** 2
    img[disc] = (30, 60, 220)
    stripes = (xx.astype(int) // 6) % 2 == 0
    band = (yy > height * 0.88) & stripes
    img[band] = (250, 250, 250)
    return img


def photo_path() -> Path | None:
    """First real COCO photo of the shared data folder, or None when it is absent."""
    if not PHOTO_DIR.is_dir():
        return None
    photos = sorted(p for p in PHOTO_DIR.iterdir() if p.suffix.lower() in (".jpg", ".png"))
    return photos[0] if photos else None
