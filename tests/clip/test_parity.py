"""Crop parity: device-side batched crops vs open_clip's own eval transform on PIL crops.

The reference for every region is ``scorer.preprocess(scorer.reference_crop(image, box, mask))``:
the crop made on the CPU with PIL, the same geometric way (``make_region_crop_pil``), then
open_clip's eval transform as returned by ``create_model_and_transforms`` (resize shortest side,
bicubic with antialiasing, centre crop, normalise). Ours: ``ClipScorer.encode_regions`` on the
one uint8 image tensor (``roi_align`` sampling, batched).

Why not exact: PIL resizes with an antialiased bicubic filter on a uint8 crop (and rounds the
result to uint8); we resample with ``roi_align`` (bilinear samples averaged over each output
pixel's footprint, i.e. an area filter) in float32. For masked crops PIL applies a hard
full-resolution mask before resizing, while we sample the low-resolution mask itself, which
gives a soft edge, sharpened to about one output pixel (mask centroids and areas agree to
0.01 px and 0.1 %, except for masks of a few low-res pixels). These are sub-pixel filtering
differences; measured on the tiny model, per-crop cosine >= 0.99998 (box), >= 0.9997 (masked),
>= 0.9999 (blur) on a synthetic image and a COCO photo.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from grounded_sam.clip import ClipScorer, RegionCropper, make_region_crop_pil, mean_fill_color
from grounded_sam.clip.regions import CropSettings

from .conftest import PHOTO_DIR, ellipse_masks, random_boxes, smooth_image, to_chw

# Minimum per-crop cosine between our embedding and the reference embedding, by crop style
# (measured minima over both images: box 0.99998, masked 0.9997, blur 0.9999).
MIN_COSINE = {"box": 0.9999, "masked": 0.999, "blur": 0.9999}
# Closest pair of different reference regions must be this many times farther apart than our
# largest per-crop error (measured: box >= 10, masked >= 2.2, blur >= 11).
MIN_SEPARATION = {"box": 4.0, "masked": 1.5, "blur": 4.0}
N_CROPS = {"box": 16, "masked": 16, "blur": 6}  # the PIL blur reference is slow on CPU


def load_photo() -> np.ndarray:
    photos = sorted(PHOTO_DIR.glob("*.jpg")) if PHOTO_DIR.is_dir() else []
    if not photos:
        pytest.skip(f"no real photo under {PHOTO_DIR} (../shared/data next to the repo)")
    with Image.open(photos[0]) as img:
        return np.asarray(img.convert("RGB")).copy()


@pytest.fixture(params=["synthetic", "photo"])
def parity_image(request) -> np.ndarray:
    """(H, W, 3) uint8: a synthetic non-square image, then a real COCO photo when present."""
    if request.param == "synthetic":
        return smooth_image(180, 260, seed=11)
    return load_photo()


def reference_embeddings(
    scorer: ClipScorer, image: np.ndarray, boxes: torch.Tensor, masks: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-crop PIL path: (pixels (N, 3, h, w), embeddings (N, D))."""
    pixels = torch.stack(
        [
            scorer.preprocess(scorer.reference_crop(image, box, mask))
            for box, mask in zip(boxes.numpy(), masks.numpy(), strict=True)
        ]
    )
    return pixels, scorer.encode_pixels(pixels)


@pytest.mark.parametrize("style", ["box", "masked", "blur"])
def test_region_embedding_parity(scorer: ClipScorer, parity_image: np.ndarray, style: str) -> None:
    height, width = parity_image.shape[:2]
    n = N_CROPS[style]
    boxes = random_boxes(height, width, n, seed=7)
    frame = (round(128 * height / max(height, width)), round(128 * width / max(height, width)))
    masks = ellipse_masks(boxes, (height, width), frame)
    scorer.crop_style = style

    ours = scorer.encode_regions(to_chw(parity_image), boxes, masks)
    ref_pixels, ref = reference_embeddings(scorer, parity_image, boxes, masks)

    # 1. The reference is non-trivial: different regions give different embeddings (random
    #    weights could map every crop to nearly the same vector, and then anything would agree).
    ref_distance = torch.cdist(ref, ref) + 10.0 * torch.eye(n)
    assert ref_distance.min() > 0.02, "two different reference crops gave the same embedding"
    assert (ref @ ref.T)[~torch.eye(n, dtype=torch.bool)].mean() < 0.995

    # 2. Parity, per crop: cosine to the reference, and the error is small compared with the
    #    distance between the two most similar *different* regions.
    cosine = (ours * ref).sum(-1)
    assert cosine.min() >= MIN_COSINE[style], cosine
    error = (ours - ref).norm(dim=-1)
    assert error.max() * MIN_SEPARATION[style] < ref_distance.min(), (error, ref_distance.min())
    # each of our embeddings is nearest to its own reference crop, not to another region's
    assert torch.equal((ours @ ref.T).argmax(dim=1), torch.arange(n))

    # 3. Pixels: same inputs up to filtering (normalised units; 0.1 is about 7 grey levels)
    ours_pixels = scorer.region_pixels(to_chw(parity_image), boxes, masks)
    assert (ours_pixels - ref_pixels).abs().mean() < 0.03


@pytest.mark.parametrize("style", ["box", "masked"])
def test_pixel_parity_at_full_clip_resolution(parity_image: np.ndarray, style: str) -> None:
    """No model needed: our 224x224 crops vs open_clip's eval transform at 224 (real size)."""
    from open_clip.transform import PreprocessCfg, image_transform_v2

    height, width = parity_image.shape[:2]
    cfg = PreprocessCfg(size=224)  # OpenAI mean/std, bicubic, resize shortest side
    transform = image_transform_v2(cfg, is_train=False)
    fill = mean_fill_color(cfg.mean)
    settings = CropSettings(style=style)
    boxes = random_boxes(height, width, 10, seed=4)  # includes boxes far smaller than 224 px
    frame = (round(256 * height / max(height, width)), round(256 * width / max(height, width)))
    masks = ellipse_masks(boxes, (height, width), frame)

    cropper = RegionCropper((224, 224), fill, settings)
    source = cropper.prepare_image(to_chw(parity_image))
    ours = cropper.crop(source, (height, width), cropper.regions(boxes), masks)
    mean = torch.tensor(cfg.mean).view(1, 3, 1, 1) * 255
    std = torch.tensor(cfg.std).view(1, 3, 1, 1) * 255
    ours = (ours - mean) / std
    ref = torch.stack(
        [
            transform(
                make_region_crop_pil(parity_image, box, mask, style, out_size=(224, 224), fill=fill)
            )
            for box, mask in zip(boxes.numpy(), masks.numpy(), strict=True)
        ]
    )
    assert ref.std() > 0.3  # real image content, not an empty canvas
    diff = (ours - ref).abs()
    assert diff.mean() < 0.02, diff.mean()  # measured 0.003 - 0.013 (about 1 grey level)
    assert torch.quantile(diff.flatten()[::7], 0.99) < 0.2  # measured <= 0.12


def test_reference_crop_geometry() -> None:
    """The PIL crop is the square region: image inside, mean colour outside the image."""
    image = smooth_image(40, 60, seed=2)
    crop = np.asarray(make_region_crop_pil(image, (-10, 0, 20, 30), None, "box", margin=0.0))
    assert crop.shape == (30, 30, 3)
    np.testing.assert_array_equal(crop[:, 10:], image[0:30, 0:20])
    np.testing.assert_array_equal(crop[:, :10], np.broadcast_to(mean_fill_color(), (30, 10, 3)))
    mask = np.zeros((20, 30), dtype=bool)  # low-res frame (half size): upsampled to 40x60
    mask[:, :5] = True
    masked = np.asarray(make_region_crop_pil(image, (-10, 0, 20, 30), mask, "masked", margin=0.0))
    np.testing.assert_array_equal(masked[:, 10:20], image[0:30, 0:10])
    np.testing.assert_array_equal(masked[:, 21:], np.broadcast_to(mean_fill_color(), (30, 9, 3)))


def test_photo_path_points_next_to_the_repo() -> None:
    repo = Path(__file__).resolve().parents[2]
    assert PHOTO_DIR == repo.parent / "shared" / "data" / "coco-val-mini" / "images"


@pytest.mark.parametrize("size", [(1200, 1600), (160, 8000)])
def test_pixel_parity_for_large_boxes_sampled_from_the_pyramid(size: tuple[int, int]) -> None:
    """Boxes far larger than 224 px (photo-sized, panorama) are sampled from a box-filtered
    pyramid level; the crops still match open_clip's eval transform of the PIL crop."""
    from open_clip.transform import PreprocessCfg, image_transform_v2

    height, width = size
    image = smooth_image(height, width, seed=5)
    cfg = PreprocessCfg(size=224)
    transform = image_transform_v2(cfg, is_train=False)
    fill = mean_fill_color(cfg.mean)
    cropper = RegionCropper((224, 224), fill, CropSettings(style="box"))
    boxes = torch.tensor(
        [[0, 0, width, height], [width * 0.1, 0, width * 0.7, height], [5, 3, 900, height - 4]],
        dtype=torch.float32,
    )
    regions = cropper.regions(boxes)
    assert (cropper.pyramid_levels(regions, cropper.top_level(size)) > 0).all()
    ours = cropper.crop(cropper.prepare_image(to_chw(image)), size, regions, None)
    mean = torch.tensor(cfg.mean).view(1, 3, 1, 1) * 255
    std = torch.tensor(cfg.std).view(1, 3, 1, 1) * 255
    ours = (ours - mean) / std
    ref = torch.stack(
        [
            transform(make_region_crop_pil(image, box, None, "box", out_size=(224, 224), fill=fill))
            for box in boxes.numpy()
        ]
    )
    assert ref.std() > 0.2  # image content (a panorama's square regions are mostly fill)
    diff = (ours - ref).abs()
    assert diff.mean() < 0.02, diff.mean()
    assert torch.quantile(diff.flatten()[::7], 0.99) < 0.2
