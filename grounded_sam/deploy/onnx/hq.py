"""HQ-SAM (``SamHQModel``) as ONNX: the graphs and the manifest of the ``sam_hq`` family.

HQ-SAM is SAM plus an HQ output token whose mask also sees early ViT features, so:

* the encoder graph returns, besides ``image_embeddings``, ``vit_features`` (1, E, E, D): the
  output of the ViT's first global-attention block (``intermediate_embeddings[0]``; D is the
  ViT width, 768 / 1024 / 1280 for ViT-B / L / H);
* the decoder graph takes both, runs the decoder with SysCV's data flow (that of
  :func:`grounded_sam.sam.hq.hq_mask_decoder`, not transformers' ``SamHQMaskDecoder.forward``)
  and returns SAM's four masks each plus the HQ mask (what
  :class:`~grounded_sam.sam.hq.SamHQPredictor` returns) and the HQ mask alone (for
  ``hq_token_only``).

Prompts, frame, preprocessing and postprocessing are SAM's (see :mod:`.sam`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from grounded_sam.deploy.onnx.graph import two_way, write_graphs
from grounded_sam.deploy.onnx.sam import SamOnnxDecoder, sam_manifest, sizes
from grounded_sam.sam.heads import hq_features

__all__ = ["SamHQOnnxDecoder", "SamHQOnnxEncoder", "export_hq_graphs", "hq_manifest"]


class SamHQOnnxEncoder(nn.Module):
    """``pixel_values`` -> (``image_embeddings`` (1, C, E, E), ``vit_features`` (1, E, E, D))."""

    def __init__(self, model) -> None:
        super().__init__()
        self.vision_encoder = model.vision_encoder

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: D102
        out = self.vision_encoder(pixel_values)
        return out.last_hidden_state, out.intermediate_embeddings[0]


class SamHQOnnxDecoder(SamOnnxDecoder):
    """HQ-SAM's prompt encoder + mask decoder as one traceable graph.

    The prompt encoding is SAM's (HQ-SAM's prompt encoder is SAM's); the decoder follows
    :func:`grounded_sam.sam.hq.hq_mask_decoder` (SysCV's order: the two-way transformer's
    updated image tokens are upsampled, the HQ features fuse the embedding and the early ViT
    features) but computes all four SAM masks at once. Outputs equal
    ``SamHQPredictor.decode`` (checked in tests/deploy/test_onnx_families.py).

    Args:
        model: ``transformers.SamHQModel`` (float32, eval).
    """

    def forward(  # noqa: D102
        self,
        image_embeddings: torch.Tensor,
        vit_features: torch.Tensor,
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
        fused = hq_features(dec, image_embeddings, vit_features)  # (1, C/8, L, L)
        tokens = torch.cat([dec.iou_token.weight, dec.mask_tokens.weight, dec.hq_token.weight], 0)
        queries, src = two_way(dec, tokens, sparse, src, self.image_pe)
        n_sam = dec.num_mask_tokens - 1  # SAM's 4 mask tokens; the HQ token comes last
        iou_out = queries[:, 0]
        mask_out = queries[:, 1 : 2 + n_sam]
        upscaled = act(dec.upscale_conv2(act(dec.upscale_layer_norm(dec.upscale_conv1(src)))))
        upscaled_hq = dec.mask_conv2(act(dec.mask_norm(dec.mask_conv1(upscaled)))) + fused
        hyper = torch.stack(
            [dec.output_hypernetworks_mlps[i](mask_out[:, i]) for i in range(n_sam)], dim=1
        )  # (B, 4, C/8)
        hyper_hq = dec.hq_mask_mlp(mask_out[:, n_sam])[:, None]  # (B, 1, C/8)
        b, c, h, w = upscaled.shape
        masks_sam = (hyper @ upscaled.reshape(b, c, h * w)).reshape(b, n_sam, h, w)
        masks_hq = (hyper_hq @ upscaled_hq.reshape(b, c, h * w)).reshape(b, 1, h, w)
        return masks_sam + masks_hq, dec.iou_prediction_head(iou_out), masks_hq


def export_hq_graphs(model, out: Path, opset: int, encoder: bool) -> dict[str, str]:
    """Write ``decoder.onnx`` (and ``encoder.onnx``) of a ``SamHQModel`` into ``out``.

    Returns:
        The manifest's ``files``: graph role -> file name.
    """
    size = sizes(model)
    side, emb, low, ch = size["side"], size["emb_side"], size["low"], size["channels"]
    example = (
        torch.randn(1, ch, emb, emb),
        torch.randn(1, emb, emb, int(model.config.mask_decoder_config.vit_dim)),
        torch.rand(2, 3, 2) * side,
        torch.tensor([[1.0, 2.0, 3.0], [0.0, 1.0, -1.0]]),
        torch.zeros(2, 1, low, low),
        torch.zeros(1),
    )
    return write_graphs(
        out,
        opset,
        "HQ-SAM",
        encoder=SamHQOnnxEncoder(model) if encoder else None,
        side=side,
        features=["image_embeddings", "vit_features"],
        decoder=SamHQOnnxDecoder(model),
        example=example,
        outputs=["low_res_logits", "iou_predictions", "hq_logits"],
    )


def hq_manifest(model, spec: str, files: dict[str, str], opset: int) -> dict[str, Any]:
    """SAM's manifest plus the ViT features and the HQ outputs (``model_type`` ``sam_hq``)."""
    manifest = sam_manifest(model, spec, files, opset)
    manifest["model_type"] = "sam_hq"
    size = sizes(model)
    emb_side, low = size["emb_side"], size["low"]
    vit = {
        "shape": [1, emb_side, emb_side, int(model.config.mask_decoder_config.vit_dim)],
        "dtype": "float32",
        "meaning": "output of the ViT's first global-attention block (channels last), "
        "for the HQ token",
    }
    manifest["encoder"]["outputs"]["vit_features"] = vit
    inputs = manifest["decoder"]["inputs"]
    manifest["decoder"]["inputs"] = {
        "image_embeddings": inputs.pop("image_embeddings"),
        "vit_features": {k: v for k, v in vit.items() if k != "meaning"},
        **inputs,
    }
    outputs = manifest["decoder"]["outputs"]
    outputs["low_res_logits"]["meaning"] = (
        "SAM mask token i's logits + the HQ mask's logits (what HQ-SAM returns by default), "
        "in the padded frame at 1/4 resolution; index 0 = single-mask output, 1-3 = multimask "
        "outputs (whole / part / sub-part)"
    )
    outputs["iou_predictions"]["meaning"] = "predicted IoU of each of SAM's 4 mask tokens"
    outputs["hq_logits"] = {
        "shape": ["num_prompts", 1, low, low],
        "dtype": "float32",
        "meaning": "the HQ token's mask alone (hq_token_only); score it with iou_predictions "
        "index 0 (single mask) or 1-3 (multimask), as SysCV's predictor does",
    }
    return manifest
