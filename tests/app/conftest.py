"""Fixtures for the web app tests: a real photograph (or a bundled example) and sessions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from grounded_sam.app import callbacks as cb

REPO = Path(__file__).resolve().parents[2]
SHARED_PHOTOS = REPO.parent / "shared" / "data" / "coco-val-mini" / "images"
EXAMPLES = REPO / "grounded_sam" / "app" / "examples"


@pytest.fixture(scope="session")
def photo() -> Path:
    """A real photograph: one from ../shared/data when present, else a bundled example."""
    shared = sorted(SHARED_PHOTOS.glob("*.jpg")) if SHARED_PHOTOS.is_dir() else []
    if shared:
        return shared[0]
    return sorted(EXAMPLES.glob("*.jpg"))[0]


@pytest.fixture(scope="session")
def examples() -> list[Path]:
    """The bundled example images, sorted by name."""
    paths = sorted(EXAMPLES.glob("*.jpg"))
    assert len(paths) >= 2
    return paths


def other_size(paths: list[Path], first: Path) -> Path:
    """An image among ``paths`` whose size differs from ``first``'s."""
    from PIL import Image

    size = Image.open(first).size
    return next(p for p in paths if Image.open(p).size != size)


class _CachedIndex:
    """The tiny engine, except that ``index`` returns one index computed up front."""

    def __init__(self, gs, index) -> None:
        self._gs = gs
        self._index = index

    def index(self, image, **kwargs):
        assert np.array_equal(image, self._index.image)
        return self._index

    def __getattr__(self, name: str):
        return getattr(self._gs, name)


@pytest.fixture(scope="session")
def photo_index(tiny_gs, photo: Path):
    """The photo's ImageIndex, built once (queries never modify an index)."""
    from grounded_sam import load_image

    return tiny_gs.index(load_image(photo))


@pytest.fixture()
def indexed(tiny_gs, photo: Path, photo_index) -> cb.Session:
    """A fresh session with the photo loaded and indexed (index built once per test run)."""
    session = cb.Session()
    cb.set_image(session, _CachedIndex(tiny_gs, photo_index), photo)
    assert session.index is photo_index and session.index_builds == 1
    yield session
    session.close()


def write_image(path: Path, size: tuple[int, int], seed: int = 0) -> Path:
    """Write a random RGB PNG of (W, H) ``size``."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    w, h = size
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)
    return path


def synthetic_result(session: cb.Session) -> None:
    """Two known regions: a big square and a small square inside it."""
    h, w = 40, 60
    image = np.full((h, w, 3), 90, dtype=np.uint8)
    masks = np.zeros((2, h, w), dtype=bool)
    masks[0, 5:35, 5:45] = True
    masks[1, 10:20, 10:20] = True
    from grounded_sam.results import make_detections

    dets = make_detections(
        masks=masks,
        xyxy=np.array([[5, 5, 45, 35], [10, 10, 20, 20]], dtype=np.float32),
        confidence=np.array([0.9, 0.6], dtype=np.float32),
        class_id=np.array([0, 1]),
        phrases=["table", "cup"],
        clip_score=np.array([0.31, 0.27], dtype=np.float32),
        sam_iou=np.array([0.95, 0.88], dtype=np.float32),
    )
    session.image = image
    session.result = cb.Result(image, dets, "text", "table, cup", ["table", "cup"], 0.01)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip the tests that use the ``browser`` fixture when their module says why.

    Added here (not as a decorator) so that ``pytest -ra`` folds them into one line.
    """
    for item in items:
        reason = getattr(getattr(item, "module", None), "BROWSER_SKIP_REASON", None)
        if reason and "browser" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.skip(reason=reason))
