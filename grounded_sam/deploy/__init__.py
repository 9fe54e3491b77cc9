"""Deployment: the SAM families' image encoder and prompt decoder as standalone graphs.

* :mod:`grounded_sam.deploy.onnx` exports them to ONNX (``grounded-sam export-onnx``), with a
  JSON manifest of the inputs, outputs and pre-/post-processing.

Result files (overlays, per-instance JSON and masks) are written by :mod:`grounded_sam.export`;
labeled datasets by :mod:`grounded_sam.labeling`.
"""
