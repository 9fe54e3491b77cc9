"""Region crops on the device: geometry, shapes, batching, crop styles, borders, no host syncs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from grounded_sam.clip import ClipScorer, CropSettings, region_boxes
from grounded_sam.clip.regions import gaussian_blur

from .conftest import ellipse_masks, random_boxes, smooth_image, to_chw

H, W = 150, 200


@pytest.fixture(scope="module")
def scene() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(image (3, H, W) uint8, boxes (13, 4) xyxy, masks (13, 60, 80) bool low-res frame)."""
    image = smooth_image(H, W, seed=3)
    boxes = random_boxes(H, W, 13, seed=3)
    return to_chw(image), boxes, ellipse_masks(boxes, (H, W), (60, 80))


def normalised_fill(scorer: ClipScorer) -> torch.Tensor:
    fill = torch.tensor(scorer.fill_color, dtype=torch.float32) / 255.0
    return ((fill - torch.tensor(scorer.mean)) / torch.tensor(scorer.std)).view(3, 1, 1)


@pytest.mark.parametrize(
    ("box", "out_size", "margin", "min_size", "expected"),
    [
        ((10, 20, 50, 40), (224, 224), 0.1, 8, (6, 6, 54, 54)),  # square around box + 10 %
        ((10, 20, 50, 40), (224, 224), 0.0, 8, (10, 10, 50, 50)),
        ((5, 5, 7, 7), (224, 224), 0.0, 8, (2, 2, 10, 10)),  # tiny box -> min_size
        ((7, 7, 5, 5), (224, 224), 0.0, 8, (2, 2, 10, 10)),  # degenerate box
        ((0, 0, 100, 100), (100, 200), 0.0, 8, (-50, 0, 150, 100)),  # wide model input
        ((-20, -10, 30, 10), (64, 64), 0.0, 8, (-20, -25, 30, 25)),  # past the border is fine
    ],
)
def test_region_boxes_table(box, out_size, margin, min_size, expected) -> None:
    got = region_boxes(torch.tensor([box], dtype=torch.float32), out_size, margin, min_size)
    assert got.tolist() == [list(map(float, expected))]


def test_region_boxes_properties() -> None:
    boxes = random_boxes(H, W, 200, seed=1)
    regions = region_boxes(boxes, (224, 224), margin=0.1)
    assert torch.equal(regions, regions.round())
    side_w, side_h = regions[:, 2] - regions[:, 0], regions[:, 3] - regions[:, 1]
    assert torch.equal(side_w, side_h)  # square for a square model input
    longer = torch.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    pad = 0.1 * longer - 0.5  # rounding moves edges by at most half a pixel each way
    assert (regions[:, 0] <= boxes[:, 0] - pad + 0.5).all()
    assert (regions[:, 2] >= boxes[:, 2] + pad - 0.5).all()
    assert (regions[:, 1] <= boxes[:, 1] - pad + 0.5).all()
    assert (regions[:, 3] >= boxes[:, 3] + pad - 0.5).all()
    torch.testing.assert_close(  # centred on the box
        (regions[:, 0] + regions[:, 2]) / 2, (boxes[:, 0] + boxes[:, 2]) / 2, atol=1.0, rtol=0
    )


@pytest.mark.parametrize("style", ["masked", "box", "blur"])
def test_encode_regions_shapes_and_batching(scorer: ClipScorer, scene, style: str) -> None:
    image, boxes, masks = scene
    scorer.crop_style = style
    full = scorer.encode_regions(image, boxes, masks)
    assert full.shape == (13, scorer.embed_dim) and full.dtype == torch.float32
    torch.testing.assert_close(full.norm(dim=-1), torch.ones(13))
    scorer.batch_size = 4  # chunks of 4, 4, 4, 1
    torch.testing.assert_close(scorer.encode_regions(image, boxes, masks), full, atol=2e-6, rtol=0)
    torch.testing.assert_close(  # a crop's embedding does not depend on its neighbours
        scorer.encode_regions(image, boxes[5:6], masks[5:6]), full[5:6], atol=2e-6, rtol=0
    )
    empty = scorer.encode_regions(image, boxes[:0], masks[:0])
    assert empty.shape == (0, scorer.embed_dim)


def test_whole_image_box_crop_is_the_image(scorer: ClipScorer) -> None:
    """A 64x64 image boxed whole at margin 0 is sampled 1:1: exactly the normalised image."""
    image = to_chw(smooth_image(64, 64, seed=5))
    scorer.crop_settings = CropSettings(style="box", margin=0.0)
    pixels = scorer.region_pixels(image, torch.tensor([[0.0, 0.0, 64.0, 64.0]]))
    mean, std = torch.tensor(scorer.mean).view(3, 1, 1), torch.tensor(scorer.std).view(3, 1, 1)
    expected = (image.float() / 255.0 - mean) / std
    torch.testing.assert_close(pixels[0], expected, atol=1e-5, rtol=0)


def test_mask_frame_maps_to_the_whole_image(scorer: ClipScorer) -> None:
    """A low-res mask of the left half keeps the left half and greys out the right half."""
    image = to_chw(smooth_image(64, 64, seed=6))
    mask = torch.zeros((1, 16, 16), dtype=torch.bool)
    mask[:, :, :8] = True
    scorer.crop_settings = CropSettings(style="masked", margin=0.0)
    pixels = scorer.region_pixels(image, torch.tensor([[0.0, 0.0, 64.0, 64.0]]), mask)[0]
    mean, std = torch.tensor(scorer.mean).view(3, 1, 1), torch.tensor(scorer.std).view(3, 1, 1)
    expected = (image.float() / 255.0 - mean) / std
    torch.testing.assert_close(pixels[:, :, :29], expected[:, :, :29], atol=1e-5, rtol=0)
    fill = normalised_fill(scorer).expand(3, 64, 64)
    torch.testing.assert_close(pixels[:, :, 35:], fill[:, :, 35:], atol=1e-5, rtol=0)
    # in between: a soft edge (mask sampled bilinearly), never outside the two colours' range
    lo, hi = torch.minimum(expected, fill), torch.maximum(expected, fill)
    assert ((pixels >= lo - 1e-5) & (pixels <= hi + 1e-5)).all()


def test_crop_styles(scorer: ClipScorer, scene) -> None:
    image, boxes, masks = scene
    inner = region_boxes(boxes, scorer.image_size, 0.1)
    inside = (inner[:, 0] >= 0) & (inner[:, 1] >= 0) & (inner[:, 2] <= W) & (inner[:, 3] <= H)
    assert inside.sum() >= 3
    full = torch.ones_like(masks)
    pixels = {}
    for style in ("box", "masked", "blur"):
        scorer.crop_style = style
        pixels[style] = scorer.region_pixels(image, boxes, masks)
        pixels[style, "full"] = scorer.region_pixels(image, boxes, full)
        pixels[style, "none"] = scorer.region_pixels(image, boxes, None)
    # partial masks: the three styles differ
    for a, b in (("box", "masked"), ("box", "blur"), ("masked", "blur")):
        assert (pixels[a] - pixels[b]).abs().mean() > 0.05, (a, b)
    # "box" ignores masks; no masks means plain box crops for every style
    torch.testing.assert_close(pixels["box", "full"], pixels["box"])
    for style in ("masked", "blur"):
        torch.testing.assert_close(pixels[style, "none"], pixels["box"])
        # a mask covering the whole image: identical to "box" for regions inside the image
        # (a region crossing the border differs only in the one-pixel soft edge there)
        torch.testing.assert_close(
            pixels[style, "full"][inside], pixels["box"][inside], atol=1e-4, rtol=0
        )
    # masked: background is exactly the mean colour, i.e. zero after normalisation
    scorer.crop_style = "masked"
    fill = normalised_fill(scorer)
    assert fill.abs().max() < 0.01
    empty = torch.zeros_like(masks)
    torch.testing.assert_close(
        scorer.region_pixels(image, boxes, empty),
        fill.expand_as(pixels["box"]),
        atol=1e-5,
        rtol=0,
    )
    embeddings = {s: None for s in ("box", "masked", "blur")}
    for style in embeddings:
        scorer.crop_style = style
        embeddings[style] = scorer.encode_regions(image, boxes, masks)
    assert ((embeddings["box"] * embeddings["masked"]).sum(-1) < 0.9999).all()


def test_outside_the_image_is_mean_colour(scorer: ClipScorer) -> None:
    image = to_chw(smooth_image(H, W, seed=8))
    scorer.crop_settings = CropSettings(style="box", margin=0.0)
    # region (-30, -30)-(10, 10): 40 px -> 64 px; the top-left 3/4 x 3/4 lies outside
    pixels = scorer.region_pixels(image, torch.tensor([[-30.0, -30.0, 10.0, 10.0]]))[0]
    fill = normalised_fill(scorer).expand(3, 46, 46)
    torch.testing.assert_close(pixels[:, :46, :46], fill, atol=1e-5, rtol=0)
    assert (pixels[:, 50:, 50:] - normalised_fill(scorer)).abs().mean() > 0.1


def test_gaussian_blur_matches_reference_kernel() -> None:
    """Separable matrix blur == direct 2-D convolution with reflect padding."""
    rng = torch.Generator().manual_seed(0)
    images = torch.rand((2, 3, 23, 31), generator=rng) * 255
    sigma = 2.2
    radius = int(np.ceil(3 * sigma))
    taps = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k1 = torch.exp(-0.5 * (taps / sigma) ** 2)
    k1 = k1 / k1.sum()
    k2 = (k1[:, None] * k1[None, :]).expand(3, 1, -1, -1)
    padded = torch.nn.functional.pad(images, (radius,) * 4, mode="reflect")
    expected = torch.nn.functional.conv2d(padded, k2, groups=3)
    torch.testing.assert_close(gaussian_blur(images, sigma), expected, atol=1e-3, rtol=1e-5)


@pytest.mark.parametrize(
    ("image", "boxes", "masks", "match"),
    [
        (torch.zeros((3, 10, 10)), torch.zeros((1, 4)), None, "uint8"),
        (torch.zeros((10, 10, 3), dtype=torch.uint8), torch.zeros((1, 4)), None, r"\(3, H, W\)"),
        (torch.zeros((3, 10, 10), dtype=torch.uint8), torch.zeros((1, 5)), None, "xyxy"),
        (
            torch.zeros((3, 10, 10), dtype=torch.uint8),
            torch.zeros((2, 4)),
            torch.zeros((1, 5, 5), dtype=torch.bool),
            "masks",
        ),
    ],
)
def test_input_validation(scorer: ClipScorer, image, boxes, masks, match) -> None:
    with pytest.raises(ValueError, match=match):
        scorer.encode_regions(image, boxes, masks)


def test_crop_settings_validation(scorer: ClipScorer) -> None:
    with pytest.raises(ValueError, match="crop style"):
        scorer.crop_style = "sharp"  # type: ignore[assignment]
    with pytest.raises(ValueError):
        CropSettings(margin=-1.0)
    with pytest.raises(TypeError):
        scorer.crop_settings = {"style": "box"}  # type: ignore[assignment]


@pytest.mark.parametrize("style", ["masked", "box", "blur"])
def test_no_host_syncs_on_the_hot_path(
    scorer: ClipScorer, scene, style: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """encode_regions never pulls values to the host (.item(), .cpu(), bool(), ...)."""
    image, boxes, masks = scene
    scorer.crop_style = style
    scorer.batch_size = 4

    def host_sync(*args, **kwargs):
        raise AssertionError("host sync on the hot path")

    for name in ("item", "tolist", "cpu", "numpy", "__bool__", "__int__", "__float__", "__index__"):
        monkeypatch.setattr(torch.Tensor, name, host_sync)
    out = scorer.encode_regions(image, boxes, masks)
    monkeypatch.undo()
    assert out.shape == (13, scorer.embed_dim)
