"""Pure helpers: point grids, crop boxes, mask/box operations and RLE."""

from grounded_sam.utils.grid import (
    build_all_layer_point_grids,
    build_point_grid,
    generate_crop_boxes,
)
from grounded_sam.utils.masks import (
    BoxLike,
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

__all__ = [
    "BoxLike",
    "batched_mask_iou",
    "box_area",
    "box_nms",
    "build_all_layer_point_grids",
    "build_point_grid",
    "decode_rle",
    "encode_rle",
    "generate_crop_boxes",
    "is_box_near_crop_edge",
    "mask_nms",
    "masks_to_boxes",
    "masks_to_uncompressed_rle",
    "remove_small_regions",
    "rle_area",
    "stability_score",
    "uncrop_boxes",
    "uncrop_masks",
    "uncrop_points",
    "xyxy_to_xywh",
]
