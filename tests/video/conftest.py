"""Fixtures for the video tests (the tiny SAM 2.1 video checkpoint ``video_sam_dir``, its engine
``video_gs`` and ``video_model_args`` are in tests/conftest.py, shared with the app and CLI).

``save_tiny_sam2_video`` writes a ``Sam2VideoModel`` folder (as the Hub's SAM 2.1 repos are);
the engine loads it as its SAM 2.1 image back-end and the propagator as ``Sam2VideoModel``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

CPU = torch.device("cpu")


@pytest.fixture(scope="package")
def video_model(video_sam_dir):
    """The tiny ``Sam2VideoModel`` (float32, CPU), shared: do not modify it."""
    from grounded_sam.video.propagator import load_video_model

    return load_video_model(video_sam_dir, CPU, torch.float32)


def require_sam3_video() -> None:
    """Skip unless transformers has SAM 3's video tracker and maps the Hub's sam3_video layout.

    transformers 5.1.0 (the CI floor) has no key conversion for that layout (see
    tests/sam/test_sam3.py); SAM 3 video is tested with 5.24 and later.
    """
    import transformers

    version = tuple(int(p) for p in transformers.__version__.split(".")[:2])
    if version < (5, 24) or not hasattr(transformers, "Sam3TrackerVideoModel"):
        pytest.skip(f"SAM 3 video needs transformers >= 5.24 ({transformers.__version__})")


@pytest.fixture(scope="package")
def sam3_video_dir(tmp_path_factory) -> Path:
    """A tiny random SAM 3 in the Hub's ``Sam3VideoModel`` layout, with its processor."""
    require_sam3_video()
    from grounded_sam.video.sam3_tiny import save_tiny_sam3_video

    return save_tiny_sam3_video(tmp_path_factory.mktemp("tiny_sam3_video"))


@pytest.fixture(scope="package")
def sam3_tracker(sam3_video_dir):
    """The tiny ``Sam3TrackerVideoModel`` (float32, CPU) and its image processor; shared."""
    from grounded_sam.video.sam3_propagator import load_sam3_tracker

    return load_sam3_tracker(sam3_video_dir, CPU, torch.float32)


@pytest.fixture(scope="package")
def sam3_gs(sam3_video_dir):
    """An engine grounding with the tiny SAM 3 video checkpoint (float32, threshold 0)."""
    from grounded_sam import GroundedSAM

    return GroundedSAM.from_pretrained(
        sam=str(sam3_video_dir), device="cpu", dtype="float32", threshold=0.0
    )
