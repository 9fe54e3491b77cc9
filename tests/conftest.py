"""Shared fixtures: tiny random models saved once per session, real data when present."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.markers import mark_by_behaviour

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def _float32_by_default():
    """Pin the automatic precision (``dtype=None``) to float32 for the whole run.

    ``dtype=None`` picks bfloat16 on CPUs with AMX / AVX512-BF16; the tests' tolerances are
    float32 ones and must hold on every CI machine, with or without those features. Tests of
    the automatic choice itself unset the variable (see tests/test_device.py). Subprocesses
    (CLI tests) inherit it.
    """
    from grounded_sam.device import DTYPE_ENV

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(DTYPE_ENV, "float32")
        yield


@pytest.fixture(scope="session")
def tiny_model_specs(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """(sam_spec, clip_spec) of tiny random models written to a temp dir."""
    from grounded_sam.testing import save_tiny_models

    return save_tiny_models(tmp_path_factory.mktemp("tiny-models"))


@pytest.fixture(scope="session")
def tiny_gs(tiny_model_specs: tuple[str, str]):
    """A GroundedSAM on CPU with tiny random models, loaded through from_pretrained."""
    from grounded_sam import EverythingSettings, GroundedSAM

    sam, clip = tiny_model_specs
    return GroundedSAM.from_pretrained(
        sam=sam,
        clip=clip,
        device="cpu",
        proposal_settings=EverythingSettings(
            points_per_side=8, pred_iou_thresh=0.0, stability_score_thresh=0.5
        ),
        threshold=0.0,
    )


@pytest.fixture(scope="session")
def video_sam_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random SAM 2.1 *video* checkpoint (``Sam2VideoModel`` layout); do not write in it.

    The engine loads it as its SAM 2.1 image back-end, the propagator as ``Sam2VideoModel``.
    """
    from grounded_sam.video.tiny import save_tiny_sam2_video

    return save_tiny_sam2_video(tmp_path_factory.mktemp("tiny_sam2_video"))


@pytest.fixture(scope="session")
def video_gs(video_sam_dir: Path, tiny_model_specs: tuple[str, str]):
    """An engine grounding with the tiny SAM 2.1 checkpoint (it can propagate by itself)."""
    from grounded_sam import EverythingSettings, GroundedSAM

    return GroundedSAM.from_pretrained(
        sam=str(video_sam_dir),
        clip=tiny_model_specs[1],
        device="cpu",
        proposal_settings=EverythingSettings(
            points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.5
        ),
        threshold=0.0,
    )


@pytest.fixture(scope="session")
def video_model_args(video_sam_dir: Path, tiny_model_specs: tuple[str, str]) -> list[str]:
    """Command-line model flags for the tiny SAM 2.1 video checkpoint (as ``video_gs``)."""
    return [
        "--sam", str(video_sam_dir),
        "--clip", tiny_model_specs[1],
        "--device", "cpu",
        "--points-per-side", "4",
        "--pred-iou-thresh", "0",
        "--stability-score-thresh", "0.5",
        "--threshold", "0",
    ]  # fmt: skip


@pytest.fixture(scope="session")
def model_args(tiny_model_specs: tuple[str, str]) -> list[str]:
    """--sam/--clip of the tiny models plus knobs that make random weights return masks.

    The command-line twin of ``tests/distributed/conftest.py::engine_kwargs``; used by the CLI
    and the Ray tests.
    """
    sam, clip = tiny_model_specs
    return [
        "--sam", sam,
        "--clip", clip,
        "--device", "cpu",
        "--points-per-side", "4",
        "--pred-iou-thresh", "0",
        "--stability-score-thresh", "0.5",
        "--threshold", "0",
    ]  # fmt: skip


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data next to the repo; skips the test when absent (as in a user's clone)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real evaluation images not present at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def real_photo(shared_data: Path) -> Path:
    """One real COCO photograph."""
    images = sorted((shared_data / "coco-val-mini" / "images").glob("*.jpg"))
    if not images:
        pytest.skip("no images in coco-val-mini")
    return images[0]


@pytest.fixture(autouse=True)
def _deterministic() -> None:
    torch.manual_seed(0)


def pytest_configure(config: pytest.Config) -> None:
    """Run the tiny test models on one intra-op thread.

    Their tensors are so small that threading buys nothing, while OpenMP threads waiting for
    each other on a busy 2-core machine made the suite several times slower in wall time.
    """
    torch.set_num_threads(1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark tests subprocess / ray / quick (tests/markers.py); skip GPU tests without CUDA."""
    mark_by_behaviour(items)
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
