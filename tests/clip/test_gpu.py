"""CUDA path: device-side crops and half precision agree with the CPU float32 result."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from grounded_sam.clip import ClipScorer, load_clip

from .conftest import ellipse_masks, random_boxes, smooth_image, to_chw


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("style", ["masked", "box", "blur"])
def test_cuda_matches_cpu(tiny_clip_path: Path, scorer: ClipScorer, dtype: str, style: str) -> None:
    cuda = load_clip(tiny_clip_path, device="cuda", dtype=dtype, crop_style=style)
    assert cuda.device.type == "cuda"
    scorer.crop_style = style
    image = smooth_image(300, 400, seed=1)
    boxes = random_boxes(300, 400, 70, seed=1)  # two chunks of 64 + 6
    masks = ellipse_masks(boxes, (300, 400), (192, 256))
    expected = scorer.encode_regions(to_chw(image), boxes, masks)
    got = cuda.encode_regions(to_chw(image).cuda(), boxes.cuda(), masks.cuda())
    assert got.device.type == "cuda" and got.dtype == torch.float32
    min_cos = 0.9999 if dtype == "float32" else 0.995
    assert ((got.cpu() * expected).sum(-1) >= min_cos).all()
    text = cuda.encode_text(["a dog", "the red car"])
    assert ((text.cpu() * scorer.encode_text(["a dog", "the red car"])).sum(-1) >= min_cos).all()
