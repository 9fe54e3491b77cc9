"""Point grids and crop boxes for SAM's "segment everything" mode.

Coordinate conventions used here:

* point grids are ``(P, 2)`` arrays of ``(x, y)`` in normalised ``[0, 1]`` image
  coordinates (multiply by ``(W, H)`` of the image or crop to get pixels);
* crop boxes are ``[x0, y0, x1, y1]`` integer pixel boxes, **exclusive** of the
  end (``image[y0:y1, x0:x1]`` is the crop).

The grids and boxes are identical to the ones Meta's ``segment_anything``
automatic mask generator uses, so proposals line up point for point.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "build_all_layer_point_grids",
    "build_point_grid",
    "generate_crop_boxes",
]


def build_point_grid(n_per_side: int) -> np.ndarray:
    """Build a regular grid of points centred in the cells of an ``n x n`` tiling.

    Args:
        n_per_side: Number of points along each side (``>= 1``).

    Returns:
        ``(n_per_side**2, 2)`` float64 array of normalised ``(x, y)`` in ``(0, 1)``,
        row-major: x varies fastest, then y.

    Raises:
        ValueError: If ``n_per_side < 1``.

    """
    n = int(n_per_side)
    if n < 1:
        raise ValueError(f"n_per_side must be >= 1, got {n_per_side!r}")
    half_cell = 1.0 / (2 * n)
    coords = np.linspace(half_cell, 1.0 - half_cell, n)
    xs, ys = np.meshgrid(coords, coords, indexing="xy")
    return np.stack([xs, ys], axis=-1).reshape(-1, 2)


def build_all_layer_point_grids(
    n_per_side: int, n_layers: int, scale_per_layer: int
) -> list[np.ndarray]:
    """Build one point grid per crop layer.

    Layer ``i`` (``0`` = the whole image) gets ``int(n_per_side / scale_per_layer**i)``
    points per side, clamped to at least one point (Meta's reference raises a
    division error instead of clamping).

    Args:
        n_per_side: Points per side on layer 0 (``>= 1``).
        n_layers: Number of crop layers beyond the whole image (``>= 0``).
        scale_per_layer: Down-scaling factor of points per side per layer (``>= 1``).

    Returns:
        ``n_layers + 1`` arrays, each ``(P_i, 2)`` normalised ``(x, y)``.

    Raises:
        ValueError: On a negative layer count or a non-positive size or scale.

    """
    if n_layers < 0:
        raise ValueError(f"n_layers must be >= 0, got {n_layers!r}")
    if scale_per_layer < 1:
        raise ValueError(f"scale_per_layer must be >= 1, got {scale_per_layer!r}")
    if n_per_side < 1:
        raise ValueError(f"n_per_side must be >= 1, got {n_per_side!r}")
    return [
        build_point_grid(max(1, int(n_per_side / (scale_per_layer**i))))
        for i in range(n_layers + 1)
    ]


def _crop_starts_and_len(length: int, n_crops: int, overlap: int) -> tuple[list[int], int]:
    """Start offsets and common length of ``n_crops`` overlapping crops along one axis."""
    crop_len = int(math.ceil((overlap * (n_crops - 1) + length) / n_crops))
    return [int((crop_len - overlap) * i) for i in range(n_crops)], crop_len


def generate_crop_boxes(
    im_size: tuple[int, int], n_layers: int, overlap_ratio: float
) -> tuple[list[list[int]], list[int]]:
    """Generate the multi-layer crop boxes of the "segment everything" mode.

    Layer 0 is the whole image; layer ``i >= 1`` tiles the image with
    ``2**i x 2**i`` overlapping crops. Adjacent crops of layer ``i`` overlap by
    ``int(overlap_ratio * min(H, W) * 2 / 2**i)`` pixels.

    Args:
        im_size: ``(H, W)`` of the image in pixels.
        n_layers: Number of crop layers beyond the whole image (``>= 0``).
        overlap_ratio: Overlap of first-layer crops as a fraction of the short side.

    Returns:
        ``(crop_boxes, layer_idxs)``: ``crop_boxes`` is a list of ``[x0, y0, x1, y1]``
        integer boxes (end exclusive, clipped to the image); within a layer the
        boxes are ordered column by column (x0 outer, y0 inner), as in Meta's
        reference. ``layer_idxs[k]`` is the layer of ``crop_boxes[k]``. As in the
        reference, when a side has fewer pixels than a layer has crops per side,
        some boxes of that layer are empty or inverted (``x0 >= x1`` or
        ``y0 >= y1``); callers should skip those crops.

    Raises:
        ValueError: On a negative layer count or an empty image size.

    """
    im_h, im_w = (int(v) for v in im_size)
    if n_layers < 0:
        raise ValueError(f"n_layers must be >= 0, got {n_layers!r}")
    if im_h < 1 or im_w < 1:
        raise ValueError(f"image size must be positive, got {tuple(im_size)!r}")

    crop_boxes: list[list[int]] = [[0, 0, im_w, im_h]]
    layer_idxs: list[int] = [0]
    short_side = min(im_h, im_w)
    for layer in range(1, n_layers + 1):
        n_crops = 2**layer
        overlap = int(overlap_ratio * short_side * (2 / n_crops))
        x_starts, crop_w = _crop_starts_and_len(im_w, n_crops, overlap)
        y_starts, crop_h = _crop_starts_and_len(im_h, n_crops, overlap)
        for x0 in x_starts:
            for y0 in y_starts:
                crop_boxes.append([x0, y0, min(x0 + crop_w, im_w), min(y0 + crop_h, im_h)])
                layer_idxs.append(layer)
    return crop_boxes, layer_idxs
