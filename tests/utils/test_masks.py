import json

import numpy as np
import pytest
import torch
import torchvision
from pycocotools import mask as coco_mask
from segment_anything.utils import amg

from grounded_sam.utils.grid import generate_crop_boxes
from grounded_sam.utils.masks import (
    batched_mask_iou,
    box_area,
    box_nms,
    decode_rle,
    encode_rle,
    is_box_near_crop_edge,
    mask_nms,
    masks_to_boxes,
    masks_to_uncompressed_rle,
    remove_small_regions,
    rle_area,
    stability_score,
    uncrop_boxes,
    uncrop_masks,
    uncrop_points,
    xyxy_to_xywh,
)

DEVICES = [
    "cpu",
    pytest.param(
        "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
    ),
]

# Non-square sizes on purpose; (1, 1) and single rows/columns are edge cases.
SHAPES = [(1, 1), (1, 9), (9, 1), (5, 7), (32, 48), (64, 40)]


def random_masks(seed: int, n: int, h: int, w: int) -> torch.Tensor:
    """(n, h, w) bool: unions of random rectangles plus salt noise, then edge cases."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, h, w), dtype=bool)
    for m in masks:
        for _ in range(rng.integers(0, 4)):
            y0, y1 = np.sort(rng.integers(0, h + 1, size=2))
            x0, x1 = np.sort(rng.integers(0, w + 1, size=2))
            m[y0:y1, x0:x1] = True
        m ^= rng.random((h, w)) < rng.choice([0.0, 0.01, 0.2])
    if n >= 4:
        masks[0] = False  # empty
        masks[1] = True  # full
        masks[2] = False
        masks[2, h - 1, w - 1] = True  # single last pixel
        masks[3] = False
        masks[3, 0, 0] = True  # single first pixel
    return torch.from_numpy(masks)


def blob_masks(seed: int, n: int, h: int, w: int) -> np.ndarray:
    """(n, h, w) bool masks with holes and islands of many sizes."""
    rng = np.random.default_rng(seed)
    import cv2

    noise = rng.standard_normal((n, h, w)).astype(np.float32)
    out = np.empty((n, h, w), dtype=bool)
    for i in range(n):
        k = int(rng.choice([1, 3, 5]))
        smooth = cv2.GaussianBlur(noise[i], (0, 0), sigmaX=k) if k > 1 else noise[i]
        out[i] = smooth > rng.uniform(-0.3, 0.3) * smooth.std()
    return out


# ------------------------------------------------------------------ stability score


@pytest.mark.parametrize("shape", [(6, 5, 7), (3, 32, 48), (2, 3, 16, 16)])
@pytest.mark.parametrize(("mask_threshold", "offset"), [(0.0, 1.0), (0.5, 0.25), (-1.0, 2.0)])
@pytest.mark.parametrize("device", DEVICES)
def test_stability_score_matches_reference(shape, mask_threshold, offset, device):
    gen = torch.Generator().manual_seed(sum(shape))
    logits = (torch.randn(shape, generator=gen) * 3 + 1).to(device)
    ours = stability_score(logits, mask_threshold, offset)
    ref = amg.calculate_stability_score(logits, mask_threshold, offset)
    assert ours.shape == shape[:-2]
    assert ours.dtype == torch.float32
    assert ours.device == logits.device
    assert torch.isfinite(ref).all()
    assert torch.equal(ours, ref)
    assert ((ours > 0) & (ours < 1)).any()  # non-trivial comparison


def test_stability_score_edge_cases():
    logits = torch.stack(
        [
            torch.full((4, 6), -10.0),  # empty at both thresholds: reference gives NaN
            torch.full((4, 6), 10.0),  # full at both: 1
            torch.full((4, 6), 0.5),  # only in the loose mask: 0
        ]
    )
    ours = stability_score(logits, 0.0, 1.0)
    ref = amg.calculate_stability_score(logits, 0.0, 1.0)
    assert torch.isnan(ref[0])
    assert ours.tolist() == [0.0, 1.0, 0.0]
    assert torch.equal(ours[1:], ref[1:])


# --------------------------------------------------------------------------- boxes


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("device", DEVICES)
def test_masks_to_boxes_matches_reference(shape, device):
    masks = random_masks(hash(shape) % 1000, 24, *shape).to(device)
    ours = masks_to_boxes(masks)
    ref = amg.batched_mask_to_box(masks)
    assert ours.shape == (24, 4)
    assert ours.dtype == torch.long
    assert ours.device == masks.device
    assert torch.equal(ours, ref)


def test_masks_to_boxes_edge_cases():
    h, w = 5, 8
    masks = torch.zeros(4, h, w, dtype=torch.bool)
    masks[1] = True
    masks[2, 3, 6] = True
    masks[3, 1:3, 2:7] = True
    expected = [[0, 0, 0, 0], [0, 0, w - 1, h - 1], [6, 3, 6, 3], [2, 1, 6, 2]]
    assert masks_to_boxes(masks).tolist() == expected


@pytest.mark.parametrize("lead", [(), (3,), (2, 3)])
def test_masks_to_boxes_any_leading_shape(lead):
    masks = random_masks(7, 6, 9, 11)[: int(np.prod(lead)) if lead else 6]
    masks = masks.reshape(*lead, 9, 11) if lead else masks[5]
    ours = masks_to_boxes(masks)
    assert ours.shape == (*lead, 4)
    assert torch.equal(ours, amg.batched_mask_to_box(masks))


@pytest.mark.parametrize("shape", [(0, 5, 5), (3, 0, 5), (2, 4, 0)])
def test_masks_to_boxes_no_pixels(shape):
    out = masks_to_boxes(torch.zeros(shape, dtype=torch.bool))
    assert out.shape == (shape[0], 4) and out.dtype == torch.long
    assert not out.any()


def test_masks_to_boxes_rejects_1d():
    with pytest.raises(ValueError):
        masks_to_boxes(torch.zeros(5, dtype=torch.bool))


@pytest.mark.parametrize("dtype", [torch.float32, torch.long])
def test_box_area_matches_torchvision(dtype):
    gen = torch.Generator().manual_seed(0)
    xy0 = torch.randint(0, 50, (20, 2), generator=gen)
    boxes = torch.cat([xy0, xy0 + torch.randint(0, 50, (20, 2), generator=gen)], 1).to(dtype)
    assert torch.equal(box_area(boxes), torchvision.ops.box_area(boxes))
    assert box_area(boxes[None]).shape == (1, 20)


def test_xyxy_to_xywh_matches_reference():
    boxes = masks_to_boxes(random_masks(3, 10, 20, 30))
    ours = xyxy_to_xywh(boxes)
    for box, got in zip(boxes, ours, strict=True):
        assert got.tolist() == amg.box_xyxy_to_xywh(box).tolist()


@pytest.mark.parametrize("iou_threshold", [0.3, 0.5, 0.7])
def test_box_nms_matches_reference_call(iou_threshold):
    gen = torch.Generator().manual_seed(1)
    xy0 = torch.randint(0, 80, (200, 2), generator=gen)
    boxes = torch.cat([xy0, xy0 + torch.randint(1, 40, (200, 2), generator=gen)], 1)
    scores = torch.rand(200, generator=gen)
    ours = box_nms(boxes, scores, iou_threshold)
    ref = torchvision.ops.batched_nms(
        boxes.float(), scores, torch.zeros(200), iou_threshold=iou_threshold
    )
    assert torch.equal(ours, ref)
    assert torch.equal(ours, torchvision.ops.nms(boxes.float(), scores, iou_threshold))
    assert 0 < len(ours) < 200


def test_box_nms_categories():
    boxes = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    assert box_nms(boxes, scores, 0.5).tolist() == [0]
    assert box_nms(boxes, scores, 0.5, torch.tensor([0, 1, 0])).tolist() == [0, 1]


# ----------------------------------------------------------------------- crops


def crop_cases():
    out = []
    for im_size in [(480, 640), (333, 250)]:
        boxes, _ = generate_crop_boxes(im_size, 2, 512 / 1500)
        out += [(im_size, box) for box in boxes[::3]]
    return out


@pytest.mark.parametrize(("im_size", "crop_box"), crop_cases())
@pytest.mark.parametrize("device", DEVICES)
def test_uncrop_matches_reference(im_size, crop_box, device):
    h, w = im_size
    x0, y0, x1, y1 = crop_box
    gen = torch.Generator().manual_seed(x0 * 7 + y0)
    masks = (torch.rand(5, y1 - y0, x1 - x0, generator=gen) > 0.9).to(device)
    boxes = masks_to_boxes(masks)
    points = torch.rand(5, 2, generator=gen, dtype=torch.float64).to(device) * 100

    assert torch.equal(uncrop_boxes(boxes, crop_box), amg.uncrop_boxes_xyxy(boxes, crop_box))
    assert torch.equal(uncrop_boxes(boxes[None], crop_box)[0], uncrop_boxes(boxes, crop_box))
    ours_pts = uncrop_points(points, crop_box)
    assert ours_pts.dtype == torch.float64
    assert torch.equal(ours_pts, amg.uncrop_points(points, crop_box))
    full = uncrop_masks(masks, crop_box, h, w)
    assert full.shape == (5, h, w) and full.dtype == torch.bool
    assert torch.equal(full, amg.uncrop_masks(masks, crop_box, h, w))


def test_uncrop_per_row_crop_boxes():
    boxes = torch.tensor([[1, 2, 3, 4], [1, 2, 3, 4]])
    crops = torch.tensor([[10, 20, 50, 60], [0, 0, 640, 480]])
    assert uncrop_boxes(boxes, crops).tolist() == [[11, 22, 13, 24], [1, 2, 3, 4]]
    assert uncrop_points(boxes[:, :2].float(), crops).tolist() == [[11, 22], [1, 2]]


def test_uncrop_masks_rejects_mismatch():
    with pytest.raises(ValueError):
        uncrop_masks(torch.zeros(1, 5, 5, dtype=torch.bool), [0, 0, 6, 5], 10, 10)


@pytest.mark.parametrize(("im_size", "crop_box"), crop_cases())
@pytest.mark.parametrize("atol", [20.0, 5.0])
@pytest.mark.parametrize("device", DEVICES)
def test_is_box_near_crop_edge_matches_reference(im_size, crop_box, atol, device):
    h, w = im_size
    x0, y0, x1, y1 = crop_box
    cw, ch = x1 - x0, y1 - y0
    rng = np.random.default_rng(x0 + 3 * y0)
    n = 64
    bx = np.sort(rng.integers(0, cw, size=(n, 2)), axis=1)
    by = np.sort(rng.integers(0, ch, size=(n, 2)), axis=1)
    # Snap some sides exactly onto or near the crop edges.
    bx[: n // 4, 0] = rng.integers(0, 3, n // 4)
    by[n // 4 : n // 2, 1] = ch - 1 - rng.integers(0, 30, n // 4)
    boxes = torch.from_numpy(np.stack([bx[:, 0], by[:, 0], bx[:, 1], by[:, 1]], 1)).to(device)
    orig = [0, 0, w, h]
    ours = is_box_near_crop_edge(boxes, crop_box, orig, atol=atol)
    ref = amg.is_box_near_crop_edge(boxes, crop_box, orig, atol=atol)
    assert ours.shape == (n,) and ours.dtype == torch.bool
    assert torch.equal(ours, ref)
    if crop_box != orig:
        assert ours.any()
    else:
        assert not ours.any()


# ----------------------------------------------------------------- small regions


@pytest.mark.parametrize("shape", [(40, 56), (33, 17)])
@pytest.mark.parametrize("mode", ["holes", "islands"])
@pytest.mark.parametrize("area_thresh", [0, 1, 3, 20, 200, 10_000])
def test_remove_small_regions_matches_reference(shape, mode, area_thresh):
    for mask in blob_masks(area_thresh + len(mode), 4, *shape):
        ours, changed = remove_small_regions(mask, area_thresh, mode)
        ref, ref_changed = amg.remove_small_regions(mask, area_thresh, mode)
        assert changed == ref_changed
        assert ours.dtype == np.bool_ and ours.shape == shape
        np.testing.assert_array_equal(ours, ref)


@pytest.mark.parametrize("mode", ["holes", "islands"])
@pytest.mark.parametrize(
    "mask",
    [
        np.zeros((6, 9), bool),
        np.ones((6, 9), bool),
        np.pad(np.ones((1, 1), bool), ((2, 3), (4, 4))),  # single pixel
        ~np.pad(np.ones((1, 1), bool), ((2, 3), (4, 4))),  # single-pixel hole
    ],
    ids=["empty", "full", "pixel", "hole"],
)
@pytest.mark.parametrize("area_thresh", [1, 2, 100])
def test_remove_small_regions_edge_cases(mode, mask, area_thresh):
    ours, changed = remove_small_regions(mask, area_thresh, mode)
    ref, ref_changed = amg.remove_small_regions(mask, area_thresh, mode)
    assert changed == ref_changed
    np.testing.assert_array_equal(ours, ref)


def test_remove_small_regions_semantics():
    mask = np.zeros((10, 10), bool)
    mask[1:8, 1:8] = True
    mask[4, 4] = False  # one-pixel hole
    mask[9, 9] = True  # one-pixel island
    filled, changed = remove_small_regions(mask, 2, "holes")
    assert changed and filled[4, 4] and filled[9, 9]
    cleaned, changed = remove_small_regions(mask, 2, "islands")
    assert changed and not cleaned[9, 9] and not cleaned[4, 4]
    # All islands small: the largest one is kept.
    kept, changed = remove_small_regions(mask, 1000, "islands")
    assert changed and kept[1, 1] and not kept[9, 9]


def test_remove_small_regions_rejects_bad_mode():
    with pytest.raises(ValueError):
        remove_small_regions(np.zeros((3, 3), bool), 5, "blobs")


# ----------------------------------------------------------------------------- RLE


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("device", DEVICES)
def test_uncompressed_rle_matches_reference(shape, device):
    masks = random_masks(11 + shape[0], 12, *shape).to(device)
    ours = masks_to_uncompressed_rle(masks)
    ref = amg.mask_to_rle_pytorch(masks)
    assert ours == ref
    for rle, mask in zip(ours, masks.cpu().numpy(), strict=True):
        assert all(type(c) is int for c in rle["counts"])
        np.testing.assert_array_equal(decode_rle(rle), mask)
        np.testing.assert_array_equal(decode_rle(rle), amg.rle_to_mask(rle))
        assert rle_area(rle) == amg.area_from_rle(rle) == int(mask.sum())


def test_uncompressed_rle_edge_cases():
    masks = random_masks(0, 4, 3, 5)
    rles = masks_to_uncompressed_rle(masks)
    assert [r["counts"] for r in rles] == [[15], [0, 15], [14, 1], [0, 1, 14]]
    assert masks_to_uncompressed_rle(torch.zeros(0, 4, 4, dtype=torch.bool)) == []


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("device", DEVICES)
def test_encode_rle_matches_pycocotools(shape, device):
    masks = random_masks(23 + shape[1], 12, *shape).to(device)
    ours = encode_rle(masks)
    np_masks = masks.cpu().numpy()
    ref = coco_mask.encode(np.asfortranarray(np_masks.transpose(1, 2, 0).astype(np.uint8)))
    meta = [amg.coco_encode_rle(r) for r in amg.mask_to_rle_pytorch(masks)]
    assert len(ours) == len(ref) == 12
    for got, want, via_meta, mask in zip(ours, ref, meta, np_masks, strict=True):
        assert got == {"size": list(shape), "counts": want["counts"].decode()}
        assert got == via_meta
        json.dumps(got)
        np.testing.assert_array_equal(coco_mask.decode(got).astype(bool), mask)
        np.testing.assert_array_equal(decode_rle(got), mask)
        assert decode_rle(got).dtype == np.bool_
        assert rle_area(got) == int(mask.sum()) == int(coco_mask.area(want))
    # numpy input and single (H, W) masks give the same encoding
    assert encode_rle(np_masks) == ours
    assert encode_rle(masks[5]) == [ours[5]]
    assert encode_rle(np_masks[5]) == [ours[5]]


def test_encode_rle_bytes_counts_and_empty_batch():
    mask = random_masks(5, 6, 10, 7)[4]
    rle = encode_rle(mask)[0]
    as_bytes = {"size": rle["size"], "counts": rle["counts"].encode()}
    np.testing.assert_array_equal(decode_rle(as_bytes), mask.numpy())
    assert rle_area(as_bytes) == int(mask.sum())
    assert encode_rle(torch.zeros(0, 3, 3, dtype=torch.bool)) == []
    with pytest.raises(ValueError):
        encode_rle(torch.zeros(3, dtype=torch.bool))


def test_decode_rle_rejects_bad_counts():
    with pytest.raises(ValueError):
        decode_rle({"size": [2, 2], "counts": [1, 2]})


# ------------------------------------------------------------------------- mask IoU


@pytest.mark.parametrize(("n", "m"), [(12, 9), (1, 1), (0, 4), (5, 0)])
@pytest.mark.parametrize("shape", [(16, 24), (9, 5)])
@pytest.mark.parametrize("device", DEVICES)
def test_batched_mask_iou_matches_pycocotools(n, m, shape, device):
    a = random_masks(n + 1, max(n, 4), *shape)[:n].to(device)
    b = random_masks(m + 2, max(m, 4), *shape)[:m].to(device)
    ours = batched_mask_iou(a, b)
    assert ours.shape == (n, m) and ours.dtype == torch.float32
    if n and m:
        ref = coco_mask.iou(encode_rle(a), encode_rle(b), [0] * m)
        both_empty = (~a.flatten(1).any(1))[:, None] & (~b.flatten(1).any(1))[None, :]
        ref = np.where(both_empty.cpu().numpy(), 0.0, ref)  # pycocotools says 1 here
        np.testing.assert_allclose(ours.cpu().numpy(), ref, rtol=1e-6, atol=0)
        if n > 1 and m > 1:
            assert ((ours > 0) & (ours < 1)).any()


def test_batched_mask_iou_rejects_mismatch():
    with pytest.raises(ValueError):
        batched_mask_iou(
            torch.zeros(1, 4, 4, dtype=torch.bool), torch.zeros(1, 4, 5, dtype=torch.bool)
        )


# ------------------------------------------------------------------------- mask NMS


@pytest.mark.parametrize("iou_threshold", [0.1, 0.2, 0.5, 0.7])
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("device", DEVICES)
def test_mask_nms_matches_box_nms_on_rectangles(iou_threshold, seed, device):
    # For axis-aligned rectangle masks, mask IoU equals box IoU of the exclusive boxes.
    rng = np.random.default_rng(seed)
    n, h, w = 120, 48, 64
    x = np.sort(rng.integers(0, w, size=(n, 2)), axis=1)
    y = np.sort(rng.integers(0, h, size=(n, 2)), axis=1)
    masks = torch.zeros(n, h, w, dtype=torch.bool)
    for i in range(n):
        masks[i, y[i, 0] : y[i, 1] + 1, x[i, 0] : x[i, 1] + 1] = True
    boxes = torch.from_numpy(np.stack([x[:, 0], y[:, 0], x[:, 1] + 1, y[:, 1] + 1], 1)).float()
    scores = torch.from_numpy(rng.permutation(n).astype(np.float32))
    ours = mask_nms(masks.to(device), scores.to(device), iou_threshold)
    ref = torchvision.ops.nms(boxes, scores, iou_threshold)
    assert ours.device == masks.to(device).device
    assert ours.cpu().tolist() == ref.tolist()
    assert 1 < len(ours) < n


def test_mask_nms_edge_cases():
    empty = mask_nms(torch.zeros(0, 4, 4, dtype=torch.bool), torch.zeros(0), 0.5)
    assert empty.dtype == torch.long and empty.numel() == 0
    same = torch.ones(3, 4, 4, dtype=torch.bool)
    assert mask_nms(same, torch.tensor([0.2, 0.9, 0.5]), 0.5).tolist() == [1]
    # ties keep input order (stable)
    assert mask_nms(same, torch.tensor([0.5, 0.5, 0.5]), 0.5).tolist() == [0]
    # threshold 1.0 suppresses nothing
    assert mask_nms(same, torch.tensor([0.2, 0.9, 0.5]), 1.0).tolist() == [1, 2, 0]
