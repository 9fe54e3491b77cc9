"""Fixtures for the video tests: a tiny random SAM 2.1 *video* checkpoint, loaded as users do.

``save_tiny_sam2_video`` writes a ``Sam2VideoModel`` folder (as the Hub's SAM 2.1 repos are);
the engine loads it as its SAM 2.1 image back-end and the propagator as ``Sam2VideoModel``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

CPU = torch.device("cpu")


@pytest.fixture(scope="package")
def video_sam_dir(tmp_path_factory) -> Path:
    from grounded_sam.video.tiny import save_tiny_sam2_video

    return save_tiny_sam2_video(tmp_path_factory.mktemp("tiny_sam2_video"))


@pytest.fixture(scope="package")
def video_model(video_sam_dir):
    """The tiny ``Sam2VideoModel`` (float32, CPU), shared: do not modify it."""
    from grounded_sam.video.propagator import load_video_model

    return load_video_model(video_sam_dir, CPU, torch.float32)


@pytest.fixture(scope="package")
def video_gs(video_sam_dir, tiny_model_specs):
    """An engine grounding with the tiny SAM 2.1 checkpoint (and the tiny CLIP)."""
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


@pytest.fixture(scope="package")
def video_model_args(video_sam_dir, tiny_model_specs) -> list[str]:
    """Command-line model flags for the tiny SAM 2.1 video checkpoint."""
    return [
        "--sam", str(video_sam_dir),
        "--clip", tiny_model_specs[1],
        "--device", "cpu",
        "--points-per-side", "4",
        "--pred-iou-thresh", "0",
        "--stability-score-thresh", "0.5",
        "--threshold", "0",
    ]  # fmt: skip
