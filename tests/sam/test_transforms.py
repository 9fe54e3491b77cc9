"""SamTransform: the geometry between original pixels and SAM's square input frame.

Checked against Meta's ``ResizeLongestSide`` / ``Sam.postprocess_masks`` where the reference
is installed, and against first principles otherwise.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from grounded_sam.sam.transforms import PIXEL_MEAN, PIXEL_STD, SamTransform

from .images import random_image, shapes_image

CPU = torch.device("cpu")

# sizes chosen to hit the round-half-up rule of the resize on both axes, tiny and huge aspect
# ratios, portrait and landscape, and already-square inputs
SIZES = [
    (120, 200),
    (300, 170),
    (480, 640),
    (640, 427),
    (1, 1),
    (1, 1000),
    (999, 3),
    (683, 1024),
    (1024, 683),
    (1500, 2000),
    (257, 255),
    (256, 256),
]


@pytest.fixture(scope="module")
def meta_transforms():
    pytest.importorskip("segment_anything")
    from segment_anything.utils.transforms import ResizeLongestSide

    return ResizeLongestSide


@pytest.mark.parametrize("side", [256, 1024])
@pytest.mark.parametrize("size", SIZES)
def test_input_size_matches_reference(meta_transforms, side, size):
    ours = SamTransform(side).input_size(size)
    ref = meta_transforms.get_preprocess_shape(size[0], size[1], side)
    # Deliberate deviation: Meta rounds an extreme aspect ratio's short side to 0 px and then
    # crashes; ours keeps at least 1 px.
    assert ours == tuple(max(1, v) for v in ref)
    assert max(ours) == side


@pytest.mark.parametrize("side", [256, 1024])
@pytest.mark.parametrize("size", [(120, 200), (300, 170), (640, 427), (999, 3)])
def test_coords_and_boxes_match_reference(meta_transforms, side, size):
    h, w = size
    rng = np.random.default_rng(1)
    coords = (rng.random((2, 5, 2)) * [w, h]).astype(np.float32)  # (..., 2) xy
    boxes = np.sort((rng.random((3, 2, 2)) * [w, h]).astype(np.float32), axis=1).reshape(3, 4)
    ours_t = SamTransform(side)
    ref = meta_transforms(side)
    # Meta scales in float64 (numpy) or float32 (torch); ours in float32: ~1 ulp of |x|<=1024
    ours_coords = ours_t.apply_coords(torch.from_numpy(coords), size)
    assert ours_coords.dtype == torch.float32 and ours_coords.shape == coords.shape
    np.testing.assert_allclose(
        ours_coords.numpy(), ref.apply_coords(coords, size), rtol=1e-6, atol=1e-4
    )
    torch.testing.assert_close(
        ours_coords, ref.apply_coords_torch(torch.from_numpy(coords), size), rtol=1e-6, atol=1e-4
    )
    ours_boxes = ours_t.apply_boxes(torch.from_numpy(boxes), size)
    np.testing.assert_allclose(
        ours_boxes.numpy(), ref.apply_boxes(boxes, size), rtol=1e-6, atol=1e-4
    )


def test_apply_boxes_keeps_leading_dims_and_accepts_ints():
    t = SamTransform(1024)
    boxes = torch.tensor([[[0, 0, 200, 100]] * 3] * 2)  # (2, 3, 4) int64
    out = t.apply_boxes(boxes, (100, 200))
    assert out.shape == (2, 3, 4) and out.dtype == torch.float32
    torch.testing.assert_close(out[0, 0], torch.tensor([0.0, 0.0, 1024.0, 512.0]))
    corner = t.apply_coords(torch.tensor([[200, 100]]), (100, 200))
    torch.testing.assert_close(corner, torch.tensor([[1024.0, 512.0]]))


@pytest.mark.parametrize("side", [256, 1024])
@pytest.mark.parametrize(
    "image",
    [random_image(120, 200), shapes_image(300, 170)],
    ids=["random_120x200", "shapes_300x170"],
)
def test_preprocess_layout_and_padding(side, image):
    t = SamTransform(side)
    h, w = t.input_size(image.shape[:2])
    x = t.preprocess(image, CPU, torch.float32)
    assert x.shape == (1, 3, side, side) and x.dtype == torch.float32
    assert (x[..., h:, :] == 0).all() and (x[..., :, w:] == 0).all()  # zero pad bottom/right
    # the content is the resized image, normalised per channel with SAM's constants
    raw = x[0, :, :h, :w] * torch.tensor(PIXEL_STD)[:, None, None]
    raw = raw + torch.tensor(PIXEL_MEAN)[:, None, None]
    assert torch.allclose(raw, raw.round(), atol=1e-3) and raw.min() >= -1e-3
    assert raw.max() <= 255 + 1e-3
    assert t.preprocess(image, CPU, torch.bfloat16).dtype == torch.bfloat16


@pytest.mark.parametrize("side", [256, 1024])
def test_preprocess_matches_reference(meta_transforms, side):
    image = shapes_image(300, 170)
    resized = meta_transforms(side).apply_image(image)
    x = torch.as_tensor(resized).permute(2, 0, 1)[None].float()
    mean = torch.tensor(PIXEL_MEAN)[:, None, None]
    std = torch.tensor(PIXEL_STD)[:, None, None]
    ref = torch.nn.functional.pad((x - mean) / std, (0, side - x.shape[-1], 0, side - x.shape[-2]))
    # same integer PIL resize and the same float32 arithmetic: exact
    assert torch.equal(SamTransform(side).preprocess(image, CPU, torch.float32), ref)


@pytest.mark.parametrize("side", [256, 1024])
@pytest.mark.parametrize("size", [(120, 200), (300, 170), (3, 1000), (640, 427)])
def test_postprocess_masks_matches_reference(side, size):
    pytest.importorskip("segment_anything")
    from segment_anything.modeling import Sam

    t = SamTransform(side)
    gen = torch.Generator().manual_seed(0)
    low = torch.randn(2, 3, t.low_res_size, t.low_res_size, generator=gen)
    input_size = t.input_size(size)
    fake_sam = SimpleNamespace(image_encoder=SimpleNamespace(img_size=side))
    ref = Sam.postprocess_masks(fake_sam, low, input_size, size)
    ours = t.postprocess_masks(low, input_size, size)
    assert ours.shape == (2, 3, *size) and ours.dtype == torch.float32
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-6)  # same two interpolations
    # half-precision logits are upscaled in float32
    assert t.postprocess_masks(low.bfloat16(), input_size, size).dtype == torch.float32


@pytest.mark.parametrize("side", [256, 1024])
@pytest.mark.parametrize("size", SIZES)
def test_low_res_valid_size_covers_exactly_the_image(side, size):
    t = SamTransform(side)
    assert t.low_res_size == side // 4
    h, w = t.input_size(size)
    vh, vw = t.low_res_valid_size((h, w))
    # low-res cell i covers input rows [4i, 4i + 4): the valid cells are those touching the image
    assert (vh - 1) * 4 < h <= vh * 4 and (vw - 1) * 4 < w <= vw * 4
    assert max(vh, vw) == t.low_res_size
