"""SAM 2 / 2.1 (``Sam2Model``) as ONNX: the graphs and the manifest of the ``sam2`` family.

What differs from SAM (see :mod:`grounded_sam.sam.sam2` for the predictor):

* **Encoder** (Hiera + FPN): ``pixel_values`` (1, 3, S, S) -> ``image_embeddings``
  (1, C, S/16, S/16) with SAM 2's "no memory" embedding already added (as
  ``Sam2Model.get_image_embeddings`` returns it), ``high_res_feats_0`` (1, C/8, S/4, S/4) and
  ``high_res_feats_1`` (1, C/4, S/8, S/8), already projected by the decoder's ``conv_s0`` /
  ``conv_s1``.
* **Decoder**: the three encoder outputs + SAM's prompt inputs -> ``low_res_logits``
  (B, 4, L, L), ``iou_predictions`` (B, 4), ``object_score_logits`` (B, 1). Index 0 is the
  single-mask output WITH SAM 2's dynamic fallback applied in the graph (when the config's
  ``dynamic_multimask_via_stability`` is on, as in every released checkpoint): if token 0's
  mask is unstable (stability score < thresh at +-delta), index 0 holds the multimask output
  with the highest predicted IoU and its IoU, as ``Sam2Predictor`` / Meta's predictor do for
  ``multimask_output=False``. Indices 1-3 are the multimask outputs. ``mask_input`` is clamped
  to [-32, 32] in the graph, as the predictor does.
* **Prompts**: every prompt ends with one padding point (0, 0) label -1, also after a box's
  corners (SAM 2 pads after the box; SAM pads only prompts without a box). A mask-only prompt
  has no points at all (N = 0).
* **Frame**: square resize to S x S without keeping the aspect ratio, no padding; pixels in
  [0, 1] normalised with ImageNet mean/std; coordinates scaled by (S / W, S / H); masks
  upscaled by one bilinear resize to (H, W).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from grounded_sam.deploy.onnx.graph import prompt_inputs_manifest, two_way, write_graphs
from grounded_sam.deploy.onnx.sam import SamOnnxDecoder
from grounded_sam.sam.heads import stable_single_mask
from grounded_sam.sam.sam2 import LOGIT_CLAMP
from grounded_sam.sam.transforms import SAM2_MEAN, SAM2_STD

__all__ = ["Sam2OnnxDecoder", "Sam2OnnxEncoder", "export_sam2_graphs", "sam2_manifest"]

FEATURE_INPUTS = ["image_embeddings", "high_res_feats_0", "high_res_feats_1"]
"""Encoder outputs = the decoder's first inputs, in graph order."""


class Sam2OnnxEncoder(nn.Module):
    """``pixel_values`` (1, 3, S, S) -> the embedding and the two high-res feature levels."""

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model

    def forward(  # noqa: D102
        self, pixel_values: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        s0, s1, embeddings = self.model.get_image_embeddings(pixel_values)
        return embeddings, s0, s1


class Sam2OnnxDecoder(SamOnnxDecoder):
    """SAM 2's prompt encoder + mask decoder as one traceable graph with tensor-only inputs.

    The prompt encoding is SAM's graph (``Sam2PromptEncoder`` embeds prompts as SAM's does; a
    box is its two corner points, labels 2 and 3) with ``mask_input`` clamped as the predictor
    does; the decoder is ``Sam2MaskDecoder.forward`` computing all four masks at once, with
    the single-mask dynamic fallback (:func:`~grounded_sam.sam.fast_decoder.stable_single_mask`)
    applied to output 0. Outputs equal ``Sam2Predictor.decode`` (checked in
    tests/deploy/test_onnx_families.py).

    Args:
        model: ``transformers.Sam2Model`` (float32, eval).
    """

    def __init__(self, model) -> None:
        super().__init__(model)
        cfg = model.config.mask_decoder_config
        self.dynamic = bool(cfg.dynamic_multimask_via_stability)
        self.delta = float(cfg.dynamic_multimask_stability_delta)
        self.thresh = float(cfg.dynamic_multimask_stability_thresh)

    def _label_embeddings(self) -> list[torch.Tensor]:
        return list(self.point_embed.weight)  # one (4, C) embedding table

    def _mask_input(self, mask_input: torch.Tensor) -> torch.Tensor:
        return mask_input.clamp(-LOGIT_CLAMP, LOGIT_CLAMP)

    def forward(  # noqa: D102
        self,
        image_embeddings: torch.Tensor,
        high_res_feats_0: torch.Tensor,
        high_res_feats_1: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        dec = self.decoder
        act = dec.activation
        sparse, src = self._embed_prompts(
            image_embeddings, point_coords, point_labels, mask_input, has_mask_input
        )
        tokens = torch.cat(
            [dec.obj_score_token.weight, dec.iou_token.weight, dec.mask_tokens.weight], dim=0
        )
        queries, src = two_way(dec, tokens, sparse, src, self.image_pe)
        iou_out = queries[:, 1]
        mask_out = queries[:, 2 : 2 + dec.num_mask_tokens]
        up = act(dec.upscale_layer_norm(dec.upscale_conv1(src) + high_res_feats_1))
        up = act(dec.upscale_conv2(up) + high_res_feats_0)
        hyper = torch.stack(
            [mlp(mask_out[:, i]) for i, mlp in enumerate(dec.output_hypernetworks_mlps)], dim=1
        )
        b, c, h, w = up.shape
        masks = (hyper @ up.reshape(b, c, h * w)).reshape(b, -1, h, w)
        iou = dec.iou_prediction_head(iou_out)
        if self.dynamic:
            single, single_iou = stable_single_mask(masks, iou, self.delta, self.thresh)
            masks = torch.cat([single, masks[:, 1:]], dim=1)
            iou = torch.cat([single_iou, iou[:, 1:]], dim=1)
        return masks, iou, dec.pred_obj_score_head(queries[:, 0])


def _sizes(model) -> dict[str, int]:
    side = int(model.config.prompt_encoder_config.image_size)
    patch = int(model.config.prompt_encoder_config.patch_size)
    return {
        "side": side,
        "emb_side": side // patch,
        "low": 4 * side // patch,
        "channels": int(model.config.mask_decoder_config.hidden_size),
    }


def export_sam2_graphs(model, out: Path, opset: int, encoder: bool) -> dict[str, str]:
    """Write ``decoder.onnx`` (and ``encoder.onnx``) of a ``Sam2Model`` into ``out``.

    Returns:
        The manifest's ``files``: graph role -> file name.
    """
    size = _sizes(model)
    side, emb, low, ch = size["side"], size["emb_side"], size["low"], size["channels"]
    example = (
        torch.randn(1, ch, emb, emb),
        torch.randn(1, ch // 8, low, low),
        torch.randn(1, ch // 4, low // 2, low // 2),
        torch.rand(2, 4, 2) * side,
        torch.tensor([[1.0, 2.0, 3.0, -1.0], [0.0, 1.0, -1.0, -1.0]]),
        torch.zeros(2, 1, low, low),
        torch.zeros(1),
    )
    return write_graphs(
        out,
        opset,
        "SAM 2",
        encoder=Sam2OnnxEncoder(model) if encoder else None,
        side=side,
        features=FEATURE_INPUTS,
        decoder=Sam2OnnxDecoder(model),
        example=example,
        outputs=["low_res_logits", "iou_predictions", "object_score_logits"],
    )


def sam2_manifest(model, spec: str, files: dict[str, str], opset: int) -> dict[str, Any]:
    """The ``sam2`` family's manifest (see :func:`grounded_sam.deploy.onnx.export_sam_onnx`)."""
    size = _sizes(model)
    side, emb, low, ch = size["side"], size["emb_side"], size["low"], size["channels"]
    cfg = model.config.mask_decoder_config
    features = {
        "image_embeddings": {
            "shape": [1, ch, emb, emb],
            "dtype": "float32",
            "meaning": "FPN level 2 + SAM 2's no-memory embedding (Sam2Model.get_image_embeddings)",
        },
        "high_res_feats_0": {
            "shape": [1, ch // 8, low, low],
            "dtype": "float32",
            "meaning": "FPN level 0 projected by the decoder's conv_s0",
        },
        "high_res_feats_1": {
            "shape": [1, ch // 4, low // 2, low // 2],
            "dtype": "float32",
            "meaning": "FPN level 1 projected by the decoder's conv_s1",
        },
    }
    dynamic = bool(cfg.dynamic_multimask_via_stability)
    single_rule = (
        f"index 0 = SAM 2's single-mask output: token 0's mask when its stability score "
        f"(area(logits > {cfg.dynamic_multimask_stability_delta}) / area(logits > "
        f"-{cfg.dynamic_multimask_stability_delta}), 1 when the latter is 0) is >= "
        f"{cfg.dynamic_multimask_stability_thresh}, else the multimask output (1-3) with the "
        "highest predicted IoU (applied in the graph, as SAM 2's predictor does for "
        "multimask_output=False)"
        if dynamic
        else "index 0 = token 0's single-mask output (this checkpoint has no dynamic fallback)"
    )
    return {
        "format": "grounded_sam.sam_onnx",
        "version": 1,
        "model": spec,
        "model_type": "sam2",
        "opset": opset,
        "files": files,
        "encoder": {
            "inputs": {"pixel_values": {"shape": [1, 3, side, side], "dtype": "float32"}},
            "outputs": features,
        },
        "decoder": {
            "inputs": {
                **{k: {"shape": v["shape"], "dtype": "float32"} for k, v in features.items()},
                **prompt_inputs_manifest(
                    low, f"clamped to [-{LOGIT_CLAMP:g}, {LOGIT_CLAMP:g}] in the graph"
                ),
            },
            "outputs": {
                "low_res_logits": {
                    "shape": ["num_prompts", 4, low, low],
                    "dtype": "float32",
                    "meaning": "mask logits of the whole S x S frame at 1/4 resolution; "
                    + single_rule
                    + "; 1-3 = multimask outputs",
                },
                "iou_predictions": {
                    "shape": ["num_prompts", 4],
                    "dtype": "float32",
                    "meaning": "predicted IoU of each of the 4 masks (index 0: of the mask "
                    "chosen for index 0)",
                },
                "object_score_logits": {
                    "shape": ["num_prompts", 1],
                    "dtype": "float32",
                    "meaning": "SAM 2's object-presence logit (> 0: object present); the image "
                    "predictor does not use it",
                },
            },
            "single_mask": {
                "dynamic_fallback": dynamic,
                "applied_in_graph": dynamic,
                "stability_delta": float(cfg.dynamic_multimask_stability_delta),
                "stability_thresh": float(cfg.dynamic_multimask_stability_thresh),
            },
            "prompt_rules": [
                "a box is two points: (x0, y0) label 2 and (x1, y1) label 3, after the clicks",
                "every prompt with points or a box ends with one padding point (0, 0) label -1, "
                "also after a box",
                "a mask-only prompt has no points (num_points = 0)",
                "all prompts of one call have the same number of points (pad with label -1)",
            ],
        },
        "preprocessing": {
            "color": "RGB, uint8 0-255",
            "resize": f"to {side}x{side} (aspect ratio NOT kept), bilinear with antialiasing "
            "on [0, 1] floats (torchvision Resize)",
            "normalize": {"scale": 1 / 255, "mean": list(SAM2_MEAN), "std": list(SAM2_STD)},
            "pad": "none",
            "layout": "NCHW float32",
        },
        "coordinates": {
            "transform": f"x' = x * {side} / W, y' = y * {side} / H "
            "(original pixels -> resized frame)",
            "box": "xyxy original pixels, corners mapped like points",
        },
        "postprocessing": {
            "mask_threshold": 0.0,
            "upscale": "bilinear (align_corners=False) from the low-res frame straight to "
            "H x W (no crop), then logits > 0",
        },
    }
