"""ONNX export of the SAM families: image encoder and prompt decoder, for deployment.

:func:`export_sam_onnx` reads the model's config ``model_type`` (as
:func:`grounded_sam.sam.factory.create_predictor` does) and writes, for SAM (``sam``), HQ-SAM
(``sam_hq``) and SAM 2 / 2.1 (``sam2``), two graphs and a JSON manifest (opset
:data:`ONNX_OPSET`, TorchScript exporter):

* ``encoder.onnx``: ``pixel_values`` (1, 3, S, S) float32, preprocessed as the manifest says
  -> ``image_embeddings`` (1, C, E, E) and the family's further decoder inputs:

  - HQ-SAM: ``vit_features`` (1, E, E, D), the ViT's first global-attention block output
    (channels last; D = ViT width);
  - SAM 2: ``high_res_feats_0`` (1, C/8, S/4, S/4) and ``high_res_feats_1``
    (1, C/4, S/8, S/8), already projected by the decoder's ``conv_s0`` / ``conv_s1``;
    ``image_embeddings`` has SAM 2's no-memory embedding added.

* ``decoder.onnx``: the encoder's outputs (in that order), then ``point_coords`` (B, N, 2)
  float32 xy in the S-frame, ``point_labels`` (B, N) float32, ``mask_input`` (B, 1, L, L)
  float32, ``has_mask_input`` (1,) float32 -> ``low_res_logits`` (B, 4, L, L) and
  ``iou_predictions`` (B, 4), plus HQ-SAM's ``hq_logits`` (B, 1, L, L) / SAM 2's
  ``object_score_logits`` (B, 1). B (prompts) and N (points per prompt) are dynamic. Labels
  follow SAM: 1 foreground, 0 background, 2 / 3 a box's top-left / bottom-right corner, -1 a
  padding point. Output mask 0 is the single-mask output, 1-3 the multimask outputs (whole /
  part / sub-part).

  - SAM and HQ-SAM: add a padding point (0, 0) label -1 when a prompt has no box, as SAM does.
  - HQ-SAM: ``low_res_logits`` = SAM mask token i + the HQ mask (HQ-SAM's default output,
    decoded with SysCV's data flow as :func:`grounded_sam.sam.hq.hq_mask_decoder`);
    ``hq_logits`` = the HQ mask alone (``hq_token_only``), scored by ``iou_predictions``.
  - SAM 2: every prompt with points or a box ends with a padding point, also after a box; a
    mask-only prompt has N = 0. Mask 0 already has SAM 2's dynamic single-mask fallback
    applied in the graph (token 0's mask, or the best multimask output when token 0's is
    unstable, as ``SAM2ImagePredictor`` with ``multimask_output=False``); ``mask_input`` is
    clamped to +-32 in the graph; ``object_score_logits`` is returned but, as in the image
    predictor, not applied to the masks.

* ``sam_onnx.json``: ``model_type``, files, inputs, outputs, preprocessing (SAM / HQ-SAM:
  resize the longest side to S, normalise in 0-255, zero-pad; SAM 2: square resize to S x S
  without keeping the aspect ratio, [0, 1] then ImageNet mean/std, no padding), coordinate
  transform, prompt rules, postprocessing.

Every graph is checked with onnxruntime against our PyTorch predictors in tests/deploy
(test_onnx.py: SAM; test_onnx_families.py: HQ-SAM and SAM 2).

Modules: :mod:`~grounded_sam.deploy.onnx.exporter` (:func:`export_sam_onnx`; each family's
record in :mod:`grounded_sam.sam.families` names its exporter), one module per family
(:mod:`~grounded_sam.deploy.onnx.sam`,
:mod:`~grounded_sam.deploy.onnx.hq`, :mod:`~grounded_sam.deploy.onnx.sam2`: graphs and
manifest), :mod:`~grounded_sam.deploy.onnx.graph` (what every family shares).
"""

from grounded_sam.deploy.onnx.exporter import MANIFEST_NAME, ONNX_OPSET, export_sam_onnx
from grounded_sam.deploy.onnx.hq import SamHQOnnxDecoder, SamHQOnnxEncoder
from grounded_sam.deploy.onnx.sam import SamOnnxDecoder, SamOnnxEncoder
from grounded_sam.deploy.onnx.sam2 import Sam2OnnxDecoder, Sam2OnnxEncoder

__all__ = [
    "ONNX_OPSET",
    "MANIFEST_NAME",
    "Sam2OnnxDecoder",
    "Sam2OnnxEncoder",
    "SamHQOnnxDecoder",
    "SamHQOnnxEncoder",
    "SamOnnxDecoder",
    "SamOnnxEncoder",
    "export_sam_onnx",
]
