"""Turning results into files: overlays, per-instance JSON and masks, labeled datasets.

Shared by the command line, the web app and notebooks:

* :mod:`grounded_sam.export.annotate` draws masks, boxes and "label confidence" text;
* :mod:`grounded_sam.export.records` converts ``sv.Detections`` to JSON-ready records (masks
  as COCO RLE) and back, and writes per-instance binary PNG masks;
* :mod:`grounded_sam.export.dataset` labels folders of images (resumable) and exports COCO,
  YOLO and Pascal VOC datasets through supervision's ``DetectionDataset``.
"""

from grounded_sam.export.annotate import annotate_detections
from grounded_sam.export.dataset import export_dataset, label_folder
from grounded_sam.export.records import (
    detections_to_json,
    detections_to_records,
    everything_to_detections,
    records_to_detections,
    save_instance_masks,
)

__all__ = [
    "annotate_detections",
    "detections_to_json",
    "detections_to_records",
    "everything_to_detections",
    "export_dataset",
    "label_folder",
    "records_to_detections",
    "save_instance_masks",
]
