import numpy as np
import pytest
from segment_anything.utils import amg

from grounded_sam.utils.grid import (
    build_all_layer_point_grids,
    build_point_grid,
    generate_crop_boxes,
)


@pytest.mark.parametrize("n_per_side", [1, 2, 3, 7, 16, 32, 64])
def test_build_point_grid_matches_reference(n_per_side):
    ours = build_point_grid(n_per_side)
    ref = amg.build_point_grid(n_per_side)
    assert ours.shape == (n_per_side**2, 2)
    assert ours.dtype == ref.dtype
    np.testing.assert_array_equal(ours, ref)
    assert (ours > 0).all() and (ours < 1).all()


def test_build_point_grid_order_is_x_fastest():
    grid = build_point_grid(3)
    np.testing.assert_array_equal(grid[:3, 1], grid[0, 1])  # first row: same y
    assert grid[0, 0] < grid[1, 0] < grid[2, 0]


@pytest.mark.parametrize("n_per_side", [0, -1])
def test_build_point_grid_rejects_empty(n_per_side):
    with pytest.raises(ValueError):
        build_point_grid(n_per_side)


@pytest.mark.parametrize(
    ("n_per_side", "n_layers", "scale"),
    [(32, 0, 1), (32, 1, 1), (32, 1, 2), (32, 3, 2), (16, 2, 1), (64, 2, 4), (10, 2, 3)],
)
def test_build_all_layer_point_grids_matches_reference(n_per_side, n_layers, scale):
    ours = build_all_layer_point_grids(n_per_side, n_layers, scale)
    ref = amg.build_all_layer_point_grids(n_per_side, n_layers, scale)
    assert len(ours) == len(ref) == n_layers + 1
    for a, b in zip(ours, ref, strict=True):
        np.testing.assert_array_equal(a, b)


def test_build_all_layer_point_grids_clamps_to_one_point():
    # Meta's reference divides by zero here; we keep one centre point per crop.
    grids = build_all_layer_point_grids(4, 3, 2)
    assert [len(g) for g in grids] == [16, 4, 1, 1]
    np.testing.assert_array_equal(grids[-1], [[0.5, 0.5]])


@pytest.mark.parametrize(("n_per_side", "n_layers", "scale"), [(0, 0, 1), (32, -1, 1), (32, 1, 0)])
def test_build_all_layer_point_grids_rejects_bad_args(n_per_side, n_layers, scale):
    with pytest.raises(ValueError):
        build_all_layer_point_grids(n_per_side, n_layers, scale)


@pytest.mark.parametrize(
    "im_size", [(480, 640), (640, 480), (1, 1), (7, 13), (1500, 2250), (333, 1024), (1024, 1024)]
)
@pytest.mark.parametrize("n_layers", [0, 1, 2, 3])
@pytest.mark.parametrize("overlap_ratio", [512 / 1500, 0.0, 0.5])
def test_generate_crop_boxes_matches_reference(im_size, n_layers, overlap_ratio):
    boxes, layers = generate_crop_boxes(im_size, n_layers, overlap_ratio)
    ref_boxes, ref_layers = amg.generate_crop_boxes(im_size, n_layers, overlap_ratio)
    assert boxes == ref_boxes
    assert layers == ref_layers
    assert all(type(v) is int for box in boxes for v in box)
    h, w = im_size
    assert boxes[0] == [0, 0, w, h]
    assert len(boxes) == 1 + sum(4**i for i in range(1, n_layers + 1))
    if min(h, w) >= 2**n_layers:  # else some crops are degenerate, as in the reference
        for x0, y0, x1, y1 in boxes:
            assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h


def test_generate_crop_boxes_tiny_image_degenerate_like_reference():
    boxes, _ = generate_crop_boxes((7, 13), 3, 0.0)
    assert boxes == amg.generate_crop_boxes((7, 13), 3, 0.0)[0]
    assert any(x0 >= x1 or y0 >= y1 for x0, y0, x1, y1 in boxes)


def test_generate_crop_boxes_tiles_image():
    h, w = 300, 500
    boxes, layers = generate_crop_boxes((h, w), 2, 512 / 1500)
    for layer in (1, 2):
        cover = np.zeros((h, w), dtype=bool)
        for (x0, y0, x1, y1), li in zip(boxes, layers, strict=True):
            if li == layer:
                cover[y0:y1, x0:x1] = True
        assert cover.all()


@pytest.mark.parametrize(("im_size", "n_layers"), [((0, 10), 0), ((10, 0), 1), ((10, 10), -1)])
def test_generate_crop_boxes_rejects_bad_args(im_size, n_layers):
    with pytest.raises(ValueError):
        generate_crop_boxes(im_size, n_layers, 0.3)
