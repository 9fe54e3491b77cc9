"""Labeling on a Ray cluster: ``grounded-sam label ... --ray`` and :func:`label_dataset`.

A thin layer over the single-machine labeling of :mod:`grounded_sam.labeling`: the same
per-image step (:func:`~grounded_sam.labeling.run.label_image`) runs in Ray Data actors,
through the same batched many-images loop (:func:`grounded_sam.batch.iter_results`), and the
same run config, state and exporter (:func:`~grounded_sam.labeling.export.export_labeled`)
write the dataset, so both paths give the same dataset.

* :mod:`~grounded_sam.distributed.sources` lists folders, text files of paths and URIs;
* :mod:`~grounded_sam.distributed.shards` holds the per-image results as Parquet shards;
* :mod:`~grounded_sam.distributed.worker` is the callable class each actor runs;
* :mod:`~grounded_sam.distributed.labeling` is the driver (the only module importing Ray,
  lazily, when a job runs: ``pip install -e ".[ray]"`` from a clone).
"""

from grounded_sam.distributed.labeling import RAY_MISSING, RayLabelReport, label_dataset

__all__ = ["RAY_MISSING", "RayLabelReport", "label_dataset"]
