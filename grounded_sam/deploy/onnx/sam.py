"""SAM (v1, ``SamModel``) as ONNX: the graphs and the manifest of the ``sam`` family.

See :mod:`grounded_sam.deploy.onnx` for the files and their inputs and outputs.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from grounded_sam.deploy.onnx.graph import prompt_inputs_manifest, two_way, write_graphs
from grounded_sam.sam.transforms import PIXEL_MEAN, PIXEL_STD

__all__ = ["SamOnnxDecoder", "SamOnnxEncoder", "export_sam_graphs", "sam_manifest", "sizes"]


class SamOnnxEncoder(nn.Module):
    """``pixel_values`` (1, 3, S, S) -> ``image_embeddings`` (1, C, E, E) of a ``SamModel``."""

    def __init__(self, model) -> None:
        super().__init__()
        self.vision_encoder = model.vision_encoder

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.vision_encoder(pixel_values).last_hidden_state


class SamOnnxDecoder(nn.Module):
    """SAM's prompt encoder + mask decoder as one traceable graph with tensor-only inputs.

    The prompt encoding is written out with ``torch.where`` / arithmetic masks (no Python
    branching on which prompts exist) on the model's own weights, so one graph serves points,
    boxes (as two corner points), point + box and mask input, for any number of prompts.
    Its outputs equal ``SamPredictor.decode`` (checked in tests/deploy/test_onnx.py).

    Args:
        model: ``transformers.SamModel`` (float32, eval).
    """

    def __init__(self, model) -> None:
        super().__init__()
        pe = model.prompt_encoder
        self.image_size = float(pe.input_image_size)
        # the prompt encoder's Fourier matrix (tied to the image-wide one), as the predictor
        self.gaussian = pe.shared_embedding.positional_embedding  # (2, C/2)
        self.point_embed = pe.point_embed  # labels 0, 1, 2, 3
        self.not_a_point_embed = pe.not_a_point_embed
        self.no_mask_embed = pe.no_mask_embed
        self.mask_embed = pe.mask_embed
        self.decoder = model.mask_decoder
        with torch.no_grad():
            self.register_buffer("image_pe", model.get_image_wide_positional_embeddings().clone())

    def _embed_points(self, coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        xy = (coords + 0.5) / self.image_size
        xy = (2 * xy - 1) @ self.gaussian * (2 * math.pi)
        emb = torch.cat([torch.sin(xy), torch.cos(xy)], dim=-1)  # (B, N, C)
        lab = labels[..., None]
        emb = torch.where(lab == -1, self.not_a_point_embed.weight, emb)
        for i, weight in enumerate(self._label_embeddings()):
            emb = emb + (lab == i).to(emb.dtype) * weight
        return emb

    def _label_embeddings(self) -> list[torch.Tensor]:
        """The learned embeddings of labels 0-3, each broadcastable to (C,)."""
        return [embed.weight for embed in self.point_embed]  # a ModuleList of (1, C)

    def _mask_input(self, mask_input: torch.Tensor) -> torch.Tensor:
        """``mask_input`` as the family's prompt encoder takes it (SAM: as given)."""
        return mask_input

    def _embed_prompts(
        self,
        image_embeddings: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sparse tokens (B, 1, N, C) and the image embedding + dense prompt (B, C, E, E)."""
        sparse = self._embed_points(point_coords, point_labels)[:, None]  # (B, 1, N, C)
        has = has_mask_input.reshape(1, 1, 1, 1)
        no_mask = self.no_mask_embed.weight.reshape(1, -1, 1, 1)
        dense = self.mask_embed(self._mask_input(mask_input)) * has + (1 - has) * no_mask
        return sparse, image_embeddings + dense

    def forward(  # noqa: D102
        self,
        image_embeddings: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        dec = self.decoder
        sparse, src = self._embed_prompts(
            image_embeddings, point_coords, point_labels, mask_input, has_mask_input
        )
        tokens = torch.cat([dec.iou_token.weight, dec.mask_tokens.weight], dim=0)
        queries, src = two_way(dec, tokens, sparse, src, self.image_pe)
        iou_out = queries[:, 0]
        mask_out = queries[:, 1 : 1 + dec.num_mask_tokens]
        up = dec.activation(dec.upscale_layer_norm(dec.upscale_conv1(src)))
        up = dec.activation(dec.upscale_conv2(up))
        hyper = torch.stack(
            [mlp(mask_out[:, i]) for i, mlp in enumerate(dec.output_hypernetworks_mlps)], dim=1
        )
        b, c, h, w = up.shape
        masks = (hyper @ up.reshape(b, c, h * w)).reshape(b, -1, h, w)
        return masks, dec.iou_prediction_head(iou_out)


def sam_manifest(model, spec: str, files: dict[str, str], opset: int) -> dict[str, Any]:
    """The ``sam`` family's manifest (see :func:`grounded_sam.deploy.onnx.export_sam_onnx`)."""
    size = sizes(model)
    side, emb_side, low, channels = (size[k] for k in ("side", "emb_side", "low", "channels"))
    return {
        "format": "grounded_sam.sam_onnx",
        "version": 1,
        "model": spec,
        "model_type": "sam",
        "opset": opset,
        "files": files,
        "encoder": {
            "inputs": {
                "pixel_values": {"shape": [1, 3, side, side], "dtype": "float32"},
            },
            "outputs": {
                "image_embeddings": {"shape": [1, channels, emb_side, emb_side], "dtype": "float32"}
            },
        },
        "decoder": {
            "inputs": {
                "image_embeddings": {
                    "shape": [1, channels, emb_side, emb_side],
                    "dtype": "float32",
                },
                **prompt_inputs_manifest(low),
            },
            "outputs": {
                "low_res_logits": {
                    "shape": ["num_prompts", 4, low, low],
                    "dtype": "float32",
                    "meaning": "mask logits in the padded frame at 1/4 resolution; index 0 = "
                    "single-mask output (boxes, several points), 1-3 = multimask outputs "
                    "(whole / part / sub-part)",
                },
                "iou_predictions": {
                    "shape": ["num_prompts", 4],
                    "dtype": "float32",
                    "meaning": "SAM's predicted IoU of each of the 4 masks",
                },
            },
            "prompt_rules": [
                "a box is two points: (x0, y0) label 2 and (x1, y1) label 3, after the clicks",
                "a prompt without a box ends with a padding point (0, 0) label -1",
                "all prompts of one call have the same number of points (pad with label -1)",
            ],
        },
        "preprocessing": {
            "color": "RGB, uint8 0-255",
            "resize": f"longest side to {side}: scale = {side} / max(H, W), "
            "h = int(H * scale + 0.5), w = int(W * scale + 0.5); bilinear (PIL)",
            "normalize": {"mean": list(PIXEL_MEAN), "std": list(PIXEL_STD)},
            "pad": f"zeros at the bottom and right to {side}x{side}, after normalising",
            "layout": "NCHW float32",
        },
        "coordinates": {
            "transform": "x' = x * w / W, y' = y * h / H (original pixels -> resized frame)",
            "box": "xyxy original pixels, corners mapped like points",
        },
        "postprocessing": {
            "mask_threshold": 0.0,
            "upscale": f"bilinear (align_corners=False) to {side}x{side}, crop [:h, :w], "
            "bilinear to H x W, then logits > 0",
        },
    }


def sizes(model) -> dict[str, int]:
    """A ``SamModel``'s (or ``SamHQModel``'s) frame sizes.

    Returns:
        ``side`` S of the square input frame, ``emb_side`` E of the embedding, ``low`` L of
        the low-res masks (S / 4) and ``channels`` C of the embedding.
    """
    vc = model.config.vision_config
    side = int(vc.image_size)
    return {
        "side": side,
        "emb_side": side // int(vc.patch_size),
        "low": side // 4,
        "channels": int(vc.output_channels),
    }


def export_sam_graphs(model, out: Path, opset: int, encoder: bool) -> dict[str, str]:
    """Write ``decoder.onnx`` (and ``encoder.onnx``) of a ``SamModel`` into ``out``.

    Returns:
        The manifest's ``files``: graph role -> file name.
    """
    size = sizes(model)
    side, emb, low, ch = size["side"], size["emb_side"], size["low"], size["channels"]
    example = (
        torch.randn(1, ch, emb, emb),
        torch.rand(2, 3, 2) * side,
        torch.tensor([[1.0, 2.0, 3.0], [0.0, 1.0, -1.0]]),
        torch.zeros(2, 1, low, low),
        torch.zeros(1),
    )
    return write_graphs(
        out,
        opset,
        "SAM",
        encoder=SamOnnxEncoder(model) if encoder else None,
        side=side,
        features=["image_embeddings"],
        decoder=SamOnnxDecoder(model),
        example=example,
        outputs=["low_res_logits", "iou_predictions"],
    )
