"""One real local Ray for the whole session (2 CPUs, no dashboard), and a small image folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.cli.conftest import synthetic_image
from tests.conftest import SHARED_DATA
from tests.local_ray import local_ray

CLASSES = "date, fig, hazelnut"


@pytest.fixture(scope="session")
def ray_address() -> str:
    """Start Ray once (num_cpus=2, no dashboard, small object store); yields its GCS address.

    Workers import ``grounded_sam`` and the test helpers from this checkout (PYTHONPATH),
    and Ray is shut down at the end of the session (no process left behind).
    """
    ray = pytest.importorskip("ray", reason="ray[data] is not installed (pip install -e .[ray])")
    with local_ray(ray) as address:
        yield address


@pytest.fixture(scope="session")
def engine_kwargs(tiny_model_specs: tuple[str, str]) -> dict:
    """Tiny random models plus the knobs that make them return masks (as the CLI tests)."""
    from grounded_sam import EverythingSettings

    sam, clip = tiny_model_specs
    return {
        "sam": sam,
        "clip": clip,
        "device": "cpu",
        "proposal_settings": EverythingSettings(
            points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.5
        ),
        "threshold": 0.0,
    }




GOOD = ["img0.jpg", "img1.jpg", "img2.jpg", "sub/deep/nested.PNG"]


@pytest.fixture(scope="session")
def folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """A few small images (nested, upper-case extension), one corrupt file, and one real
    photo from ../shared/data when present. Returns (folder, relative paths of good images).
    """
    root = tmp_path_factory.mktemp("ray-label") / "images"
    for i in range(3):
        synthetic_image(root / f"img{i}.jpg", h=64 + 8 * i, w=80, seed=i)
    synthetic_image(root / "sub" / "deep" / "nested.PNG", h=72, w=72, seed=7)
    (root / "sub" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated garbage")
    good = list(GOOD)
    photos = sorted((SHARED_DATA / "coco-val-mini" / "images").glob("*.jpg"))
    if photos:
        shutil.copy2(photos[0], root / "sub" / "photo.jpg")
        good.append("sub/photo.jpg")
    return root, sorted(good)
