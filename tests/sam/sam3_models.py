"""One tiny random SAM 3 (model + processor with the rebuilt CLIP tokenizer) per test process.

Written on first use into a temporary folder (removed at exit) and shared by every SAM 3 test
module of the process, so that its cost (about a second) is paid once. Skips when the installed
transformers has no ``Sam3Model``.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

IMAGE_SIZE = 112
_FOLDERS: dict[tuple[int, int], Path] = {}


def require_sam3() -> None:
    """Skip the calling test when transformers has no SAM 3."""
    import transformers

    if not hasattr(transformers, "Sam3Model"):
        pytest.skip(f"transformers {transformers.__version__} has no Sam3Model")


def tiny_sam3_folder(seed: int = 0, image_size: int = IMAGE_SIZE) -> Path:
    """The folder of a tiny random SAM 3 saved with ``save_pretrained`` (cached per process)."""
    require_sam3()
    key = (seed, image_size)
    if key not in _FOLDERS:
        from grounded_sam.sam.sam3_tiny import save_tiny_sam3

        root = Path(tempfile.mkdtemp(prefix="tiny-sam3-"))
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        _FOLDERS[key] = save_tiny_sam3(root / "tiny-sam3", seed=seed, image_size=image_size)
    return _FOLDERS[key]


def scene(h: int = 90, w: int = 120, seed: int = 0) -> np.ndarray:
    """A non-square RGB image: a bright disc and a dark square on noise."""
    rng = np.random.default_rng(seed)
    img = rng.integers(90, 140, (h, w, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:h, :w]
    img[(yy - h // 3) ** 2 + (xx - w // 3) ** 2 < (h // 5) ** 2] = (230, 180, 40)
    img[h // 2 : h // 2 + h // 4, w // 2 : w // 2 + w // 4] = (30, 30, 90)
    return img
