"""The dataset formats, one module each (as supervision's ``dataset/formats``).

* :mod:`~grounded_sam.labeling.formats.coco`: ``annotations.json``, exact RLE masks, a
  ``score`` (confidence), ``clip_score`` and ``sam_iou`` per annotation;
* :mod:`~grounded_sam.labeling.formats.yolo`: ``labels/*.txt`` (segmentation polygons),
  ``scores/*.txt`` (the confidence of each label line) and ``data.yaml``;
* :mod:`~grounded_sam.labeling.formats.voc`: ``annotations/*.xml`` (Pascal VOC);
* :mod:`~grounded_sam.labeling.formats.coco_video`: videos: ``annotations.json`` in
  COCO-video (TAO style: videos, frames as images, tracks, annotations with ``track_id``);
* :mod:`~grounded_sam.labeling.formats.mot`: videos: MOTChallenge sequence folders;
* :mod:`~grounded_sam.labeling.formats.common`: what they share (supervision's
  ``DetectionDataset`` in chunks, moving staged files into place).

Each writer has the signature of :data:`~grounded_sam.labeling.formats.common.Writer` and is
called by :func:`grounded_sam.labeling.export.write_dataset`, which copies the images and
stages the files; polygon formats first join a mask in several parts into one piece
(:mod:`grounded_sam.export.single_part`), so each detection is one polygon, one instance.
"""
