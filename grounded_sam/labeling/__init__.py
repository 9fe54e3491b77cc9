"""Open-vocabulary labeling of an image folder into a COCO, YOLO or Pascal VOC dataset.

Every image is indexed once and all classes are answered from that one index. The result of
each image is persisted atomically under ``DATASET_DIR/.grounded_sam_state/<relative
path>.json`` (the instance records of :mod:`grounded_sam.export.records`, masks as COCO
RLE) as soon as it is computed, so an interrupted run (Ctrl-C, a killed process) continues
where it stopped when started again, and the export, built only from those files at the
end, is the same as that of an uninterrupted run.

Layout of ``DATASET_DIR``::

    images/                  the labeled images (copied; nested paths flattened with "__")
    annotations.json         COCO: RLE masks, iscrowd 0, a "score" (confidence) per annotation
    labels/*.txt, data.yaml  YOLO segmentation polygons (one line per detection)
    scores/*.txt             YOLO sidecar: the confidence of each label line, same order
    annotations/*.xml        Pascal VOC
    .grounded_sam_state/     resume state (run.json + one JSON per image)
    .grounded_sam.lock       held (OS lock) while a run labels or exports into the folder

Only one run at a time may write a DATASET_DIR: a second ``label`` / ``export_dataset`` on the
same folder fails at once with :class:`grounded_sam.labeling.lock.DatasetBusyError` (or waits
``lock_wait`` seconds), so exports never interleave.

Modules, one job each:

* :mod:`~grounded_sam.labeling.scan`: the job's folders checked and its images listed;
* :mod:`~grounded_sam.labeling.config`: the run config (from a ``QueryOptions`` and the
  models) that decides whether saved results may be reused;
* :mod:`~grounded_sam.labeling.state`: ``run.json`` and the per-image resume state;
* :mod:`~grounded_sam.labeling.lock`: the dataset folder's OS lock;
* :mod:`~grounded_sam.labeling.run`: labeling on one machine (:func:`label_folder`);
* :mod:`~grounded_sam.labeling.export`: writing the dataset (:func:`export_dataset`);
* :mod:`~grounded_sam.labeling.formats`: one module per format (COCO, YOLO, VOC), written
  through supervision's ``DetectionDataset``.
* :mod:`~grounded_sam.labeling.video`: a folder of videos (or one video file), each tracked
  by :func:`grounded_sam.video.api.track` and saved per video
  (:mod:`~grounded_sam.labeling.video_state`), exported as COCO-video or MOTChallenge
  (:func:`label_videos`, :func:`label_video_folder`).

:mod:`grounded_sam.distributed` labels on a Ray cluster with the same per-image step, state
config and exporter.
"""

from grounded_sam.labeling.config import labeling_config
from grounded_sam.labeling.export import FORMATS, export_dataset, export_labeled
from grounded_sam.labeling.lock import DatasetBusyError, dataset_lock
from grounded_sam.labeling.run import LabelReport, label_folder, label_image, label_images
from grounded_sam.labeling.scan import IMAGE_EXTENSIONS, find_images, prepare_labeling
from grounded_sam.labeling.state import STATE_DIRNAME, LabeledImage, begin_run
from grounded_sam.labeling.video import (
    VIDEO_FORMATS,
    VideoLabelReport,
    label_video_folder,
    label_videos,
)

__all__ = [
    "FORMATS",
    "IMAGE_EXTENSIONS",
    "STATE_DIRNAME",
    "VIDEO_FORMATS",
    "DatasetBusyError",
    "LabelReport",
    "LabeledImage",
    "VideoLabelReport",
    "begin_run",
    "dataset_lock",
    "export_dataset",
    "export_labeled",
    "find_images",
    "label_folder",
    "label_image",
    "label_images",
    "label_video_folder",
    "label_videos",
    "labeling_config",
    "prepare_labeling",
]
