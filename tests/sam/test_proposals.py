"""The proposals' frame geometry (``grounded_sam.sam.proposals.MaskFrame``).

A proposal's low-res logits must come back to the image exactly as the family's own predictor
upscales them (``predictor.upscale`` = ``transform.postprocess_masks``): two bilinear steps
through the padded frame for SAM, one straight resize for SAM 2.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from grounded_sam.sam.everything import EverythingSettings, generate_proposals
from grounded_sam.sam.proposals import MaskFrame, Proposals
from grounded_sam.sam.sam2 import Sam2Transform
from grounded_sam.sam.transforms import SamTransform
from grounded_sam.utils.masks import batched_mask_iou

from .test_everything import UNIT, shapes_scene


@pytest.mark.parametrize(
    ("transform", "upscale"),
    [(SamTransform(256), "pad_crop"), (SamTransform(1024), "pad_crop"),
     (Sam2Transform(256), "resize"), (Sam2Transform(1024), "resize")],
)  # fmt: skip
def test_frame_of_a_transform_upscales_as_the_transform(transform, upscale):
    frame = MaskFrame.of(transform)
    assert frame == MaskFrame(transform.target_length, transform.low_res_size, upscale)
    side = transform.low_res_size
    logits = torch.randn(3, 1, side, side, generator=torch.Generator().manual_seed(0)) * 4
    for size in [(150, 230), (230, 150), (97, 97), (13, 400)]:
        input_size = transform.input_size(size)
        expected = transform.postprocess_masks(logits, input_size, size)
        assert torch.equal(frame.upscale_logits(logits, input_size, size), expected), size


def test_resize_frame_is_one_bilinear_step():
    frame = MaskFrame(64, 16, "resize")
    logits = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    one_step = F.interpolate(logits, (50, 70), mode="bilinear", align_corners=False)
    assert torch.equal(frame.upscale_logits(logits, (64, 64), (50, 70)), one_step)
    two_steps = MaskFrame(64, 16, "pad_crop").upscale_logits(logits, (64, 64), (50, 70))
    assert not torch.equal(two_steps, one_step)  # the two conventions do differ


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"target_length": 0}, "target_length must be an integer >= 1"),
     ({"low_res_size": 2.5}, "low_res_size must be an integer >= 1"),
     ({"upscale": "nearest"}, "upscale must be one of")],
)  # fmt: skip
def test_frame_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MaskFrame(**kwargs)


@pytest.fixture(scope="module")
def sam2_proposals(sam2) -> Proposals:
    """SAM 2 proposals of a non-square scene, half of them re-assigned to a crop.

    (The tiny SAM 2's masks touch every crop's edge, so real crop layers keep nothing from
    the crops; the crop's logits here are other proposals', which is all the geometry needs.)
    """
    image = shapes_scene(150, 230, seed=2)
    settings = EverythingSettings(**{**UNIT, "stability_score_thresh": 0.3})
    p = generate_proposals(sam2, image, settings)
    assert len(p) >= 3
    side = sam2.transform.target_length
    crop_index = torch.arange(len(p)) % 2
    return dataclasses.replace(
        p,
        crop_index=crop_index,
        crop_boxes=torch.tensor([[0, 0, 230, 150], [37, 21, 190, 118]]),
        crop_input_sizes=[(side, side), (side, side)],
    )


def test_generated_proposals_carry_the_predictor_frame(sam2, predictor, sam2_proposals):
    assert sam2_proposals.frame == MaskFrame.of(sam2.transform)
    assert sam2_proposals.frame.upscale == "resize"
    assert sam2_proposals.low_res_size == sam2.transform.low_res_size
    assert (sam2_proposals.crop_index == 1).any()
    image = shapes_scene(40, 50, seed=0)
    sam = generate_proposals(predictor, image, EverythingSettings(points_per_side=2))
    assert sam.frame == MaskFrame.of(predictor.transform)
    assert sam.frame.upscale == "pad_crop"


def test_sam2_full_masks_are_the_predictor_upscale(sam2, sam2_proposals):
    """Each SAM 2 proposal's full mask is ``predictor.upscale`` of its logits (one step),
    pasted into the image at its crop."""
    p = sam2_proposals
    full = p.full_masks()
    H, W = p.original_size
    for i in range(len(p)):
        x0, y0, x1, y1 = p.crop_boxes[p.crop_index[i]].tolist()
        up = F.interpolate(
            p.low_res_logits[i][None, None], (y1 - y0, x1 - x0), mode="bilinear",
            align_corners=False,
        )[0, 0]  # fmt: skip
        expected = torch.zeros(H, W, dtype=torch.bool)
        expected[y0:y1, x0:x1] = up > 0
        assert torch.equal(full[i], expected), i
    whole = torch.nonzero(p.crop_index == 0).flatten()
    embedding = sam2.encode(shapes_scene(150, 230, seed=2))
    upscaled = sam2.upscale(embedding, p.low_res_logits[whole][:, None])[:, 0] > 0
    assert torch.equal(full[whole], upscaled)


def test_sam2_frame_masks_at_original_size_are_the_full_masks(sam2_proposals):
    """With one-step upscaling, sampling the logits at each pixel centre *is* the upscale:
    only float rounding of near-zero logits may flip a pixel."""
    p = sam2_proposals
    frame = p.frame_masks(p.original_size)
    full = p.full_masks()
    flips = (frame != full).flatten(1).sum(1)
    assert flips.max() <= 2, flips
    assert batched_mask_iou(frame, full).diagonal().min() >= 0.999
