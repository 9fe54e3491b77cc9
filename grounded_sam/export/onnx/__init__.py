"""ONNX export of SAM: the image encoder and the prompt encoder + mask decoder, for deployment.

Two graphs and a JSON manifest are written:

* ``encoder.onnx``: ``pixel_values`` (1, 3, S, S) float32, already resized (longest side S),
  normalised and zero-padded -> ``image_embeddings`` (1, C, E, E).
* ``decoder.onnx``: ``image_embeddings`` (1, C, E, E), ``point_coords`` (B, N, 2) float32 xy
  in the S-frame, ``point_labels`` (B, N) float32, ``mask_input`` (B, 1, L, L) float32,
  ``has_mask_input`` (1,) float32 -> ``low_res_logits`` (B, 4, L, L) and ``iou_predictions``
  (B, 4). B (prompts) and N (points per prompt) are dynamic. Labels follow SAM: 1 foreground,
  0 background, 2 / 3 a box's top-left / bottom-right corner, -1 a padding point (add one at
  (0, 0) when a prompt has no box, as SAM does). Output mask 0 is SAM's single-mask output;
  1-3 its multimask outputs (whole / part / sub-part).
* ``sam_onnx.json``: inputs, outputs, preprocessing, coordinate transform, postprocessing.

Only the SAM (v1) family is exported: HQ-SAM's decoder also needs the encoder's intermediate
ViT features and SAM 2's the high-resolution backbone features, and this module's graphs and
manifest describe SAM's interface only (see :data:`ONNX_OPSET` for the opset).

Modules: :mod:`~grounded_sam.export.onnx.exporter` (:func:`export_sam_onnx`),
:mod:`~grounded_sam.export.onnx.sam` (SAM's graphs and manifest),
:mod:`~grounded_sam.export.onnx.graph` (what every family shares).
"""

from grounded_sam.export.onnx.exporter import MANIFEST_NAME, ONNX_OPSET, export_sam_onnx
from grounded_sam.export.onnx.sam import SamOnnxDecoder, SamOnnxEncoder

__all__ = ["ONNX_OPSET", "MANIFEST_NAME", "SamOnnxDecoder", "SamOnnxEncoder", "export_sam_onnx"]
