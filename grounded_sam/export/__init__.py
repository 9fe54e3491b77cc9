"""Turning results into files: overlays, per-instance JSON and masks.

Shared by the command line, the web app, labeling and notebooks:

* :mod:`grounded_sam.export.annotate` draws masks, boxes and "label confidence" text;
* :mod:`grounded_sam.export.records` converts ``sv.Detections`` to JSON-ready records (masks
  as COCO RLE) and back, and writes per-instance binary PNG masks;
* :mod:`grounded_sam.export.files` writes files atomically and names the results of many
  images uniquely.

Labeled datasets (COCO, YOLO, VOC) are :mod:`grounded_sam.labeling`; ONNX graphs for
deployment are :mod:`grounded_sam.deploy.onnx`.
"""

from grounded_sam.export.annotate import annotate_detections
from grounded_sam.export.records import (
    detections_to_json,
    detections_to_records,
    everything_records,
    everything_to_detections,
    records_to_detections,
    save_instance_masks,
)

__all__ = [
    "annotate_detections",
    "detections_to_json",
    "detections_to_records",
    "everything_records",
    "everything_to_detections",
    "records_to_detections",
    "save_instance_masks",
]
