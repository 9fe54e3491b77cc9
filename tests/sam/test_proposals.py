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

from grounded_sam import limits
from grounded_sam.sam.everything import EverythingSettings, generate_proposals
from grounded_sam.sam.proposals import MaskFrame, Proposals
from grounded_sam.sam.sam2 import Sam2Transform
from grounded_sam.sam.transforms import SamTransform
from grounded_sam.utils.masks import batched_mask_iou

from . import everything_scenes
from .everything_scenes import UNIT, shapes_scene


@pytest.fixture(scope="module")
def scene_230x150():
    return shapes_scene(230, 150, seed=0)


@pytest.fixture(scope="module")
def crop_proposals(sam_model, scene_230x150) -> Proposals:
    """SAM proposals of the structured tiny SAM with one crop layer."""
    predictor = everything_scenes.structured_predictor(sam_model)
    p = everything_scenes.proposals_with_crops(predictor, scene_230x150)
    assert len(p) >= 3 and (p.crop_index > 0).any() and (p.crop_index == 0).any()
    return p


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


# -- SAM proposals with crops: selection, full masks, low-res frames ----------------------


def test_select(crop_proposals):
    p = crop_proposals
    idx = torch.tensor([len(p) - 1, 0])
    sub = p.select(idx)
    assert len(sub) == 2
    assert torch.equal(sub.low_res_logits, p.low_res_logits[idx])
    assert torch.equal(sub.point_coords, p.point_coords[idx])
    assert torch.equal(sub.crop_boxes, p.crop_boxes) and sub.crop_input_sizes == p.crop_input_sizes
    mask = torch.zeros(len(p), dtype=torch.bool)
    mask[1] = True
    assert torch.equal(p.select(mask).predicted_iou, p.predicted_iou[1:2])


def test_full_masks_and_boxes(crop_proposals, scene_230x150):
    p = crop_proposals
    full = p.full_masks()
    assert full.shape == (len(p), *scene_230x150.shape[:2]) and full.dtype == torch.bool
    # nothing outside each proposal's crop
    for i in range(len(p)):
        x0, y0, x1, y1 = p.crop_boxes[p.crop_index[i]].tolist()
        inside = torch.zeros_like(full[i])
        inside[y0:y1, x0:x1] = True
        assert not (full[i] & ~inside).any()
    # the low-res boxes agree with the full-resolution masks' boxes to about one low-res pixel
    from grounded_sam.utils.masks import masks_to_boxes

    crop = p.crop_boxes[p.crop_index].float()
    input_size = torch.tensor([p.crop_input_sizes[k] for k in p.crop_index.tolist()]).float()
    stride = p.frame.target_length / p.low_res_size
    px = stride * (crop[:, 2:] - crop[:, :2]) / input_size.flip(1)  # (x, y) per low-res pixel
    error = (masks_to_boxes(full).float() - p.boxes).abs()
    assert (error <= px.repeat(1, 2) + 1).all(), (error, px)
    idx = torch.tensor([2, 0])
    assert torch.equal(p.full_masks(idx), full[idx])


def test_full_masks_only_for_requested(crop_proposals, monkeypatch):
    from grounded_sam.sam.proposals import MaskFrame

    upsampled = []
    original = MaskFrame.upscale_logits

    def counting(self, low_res, input_size, size):
        upsampled.append(int(low_res.shape[0]))
        return original(self, low_res, input_size, size)

    monkeypatch.setattr(MaskFrame, "upscale_logits", counting)
    crop_proposals.full_masks(torch.tensor([1]))
    assert sum(upsampled) == 1
    upsampled.clear()
    crop_proposals.full_masks(torch.tensor([], dtype=torch.long))
    assert sum(upsampled) == 0


@pytest.mark.parametrize("size", [None, (57, 38), (115, 75)])
def test_frame_masks_match_downsampled_full_masks(crop_proposals, size):
    p = crop_proposals
    frame = p.frame_masks(size)
    fh, fw = size or p.frame_size()
    assert frame.shape == (len(p), fh, fw) and frame.dtype == torch.bool
    if size is None:
        assert max(fh, fw) == p.low_res_size
    # the frame-sized version of the full mask: majority of the original pixels each frame
    # pixel covers. Proposals are small here (~20-100 frame pixels, blocky edges), so a
    # single boundary pixel weighs a few % of IoU.
    full = p.full_masks().float()[:, None]
    down = torch.nn.functional.interpolate(full, (fh, fw), mode="area")[:, 0] > 0.5
    iou = batched_mask_iou(frame, down).diagonal()
    assert iou.min() >= 0.75 and iou.mean() >= 0.9, iou


def test_frame_masks_at_original_size_are_the_full_masks(crop_proposals):
    """Geometry check: a frame of the image's own size samples each pixel centre, so it must
    reproduce the full masks (crop offsets, resize and decoder stride all accounted for); only
    pixels where one bilinear resampling and Meta's two (L -> input frame -> H x W) disagree
    may differ."""
    p = crop_proposals
    frame = p.frame_masks(p.original_size)
    iou = batched_mask_iou(frame, p.full_masks()).diagonal()
    assert iou.min() >= 0.98, iou


def test_frame_masks_outside_crop_are_false(crop_proposals):
    p = crop_proposals
    frame = p.frame_masks()
    fh, fw = frame.shape[-2:]
    h, w = p.original_size
    ys = (torch.arange(fh) + 0.5) * h / fh
    xs = (torch.arange(fw) + 0.5) * w / fw
    for i in range(len(p)):
        x0, y0, x1, y1 = p.crop_boxes[p.crop_index[i]].tolist()
        inside = ((ys >= y0) & (ys < y1))[:, None] & ((xs >= x0) & (xs < x1))[None, :]
        assert not (frame[i] & ~inside).any()


# -- memory: full masks are upscaled a chunk at a time (issue 22) ------------------------------


def _many_proposals(n: int, size: tuple[int, int], frame: MaskFrame) -> Proposals:
    """n proposals of one whole-image crop; the logits are one shared (broadcast) zero map."""
    h, w = size
    side = frame.low_res_size
    scale = frame.target_length / max(h, w)
    return Proposals(
        low_res_logits=torch.zeros(1, side, side).expand(n, -1, -1),
        crop_index=torch.zeros(n, dtype=torch.long),
        crop_boxes=torch.tensor([[0, 0, w, h]]),
        crop_input_sizes=[(round(h * scale), round(w * scale))],
        boxes=torch.zeros(n, 4),
        predicted_iou=torch.ones(n),
        stability_score=torch.ones(n),
        point_coords=torch.zeros(n, 2),
        original_size=size,
        frame=frame,
    )


def test_full_masks_upscale_a_bounded_chunk_at_a_time(monkeypatch):
    """Issue 22: everything(points_per_side=32, pred_iou_thresh=0, stability_score_thresh=0)
    on a 640x480 image keeps up to 32 * 32 * 3 = 3072 masks; upscaled all at once through
    SAM's 1024 x 1024 frame that asked for 12.9 GB of float logits, although the 3072 bool
    masks (0.94 GB) fit the call's mask budget. Each upscale now holds at most
    ``UPSCALE_CHUNK_BYTES`` of logits."""
    import grounded_sam.sam.proposals as proposals_module

    frame, size = MaskFrame(1024, 256, "pad_crop"), (480, 640)
    assert 3072 * frame.upscale_bytes(size) > 12.8e9  # the all-at-once request
    assert 3072 * size[0] * size[1] <= limits.MAX_MASK_PIXELS
    held = []

    def recording(self, low_res, input_size, out_size):  # no maths: only the sizes matter
        held.append(low_res.shape[0] * self.upscale_bytes(out_size))
        return torch.zeros(low_res.shape[0], 1, *out_size)

    monkeypatch.setattr(MaskFrame, "upscale_logits", recording)
    masks = _many_proposals(200, size, frame).full_masks()
    assert masks.shape == (200, *size)
    assert len(held) > 1 and max(held) <= proposals_module.UPSCALE_CHUNK_BYTES


def test_chunked_full_masks_are_the_same(sam2_proposals, monkeypatch):
    import grounded_sam.sam.proposals as proposals_module

    whole = sam2_proposals.full_masks()
    budget = 2 * sam2_proposals.frame.upscale_bytes(sam2_proposals.original_size)
    monkeypatch.setattr(proposals_module, "UPSCALE_CHUNK_BYTES", budget)
    calls = []
    original = MaskFrame.upscale_logits

    def counting(self, low_res, input_size, size):
        calls.append((int(low_res.shape[0]), low_res.shape[0] * self.upscale_bytes(size)))
        return original(self, low_res, input_size, size)

    monkeypatch.setattr(MaskFrame, "upscale_logits", counting)
    assert torch.equal(sam2_proposals.full_masks(), whole)
    assert sum(n for n, _ in calls) == len(sam2_proposals)
    assert len(calls) > 2 and max(b for _, b in calls) <= budget  # 2 crops, several chunks
