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
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from grounded_sam.sam.transforms import PIXEL_MEAN, PIXEL_STD

__all__ = ["ONNX_OPSET", "MANIFEST_NAME", "SamOnnxDecoder", "SamOnnxEncoder", "export_sam_onnx"]

logger = logging.getLogger(__name__)

ONNX_OPSET = 17
"""ONNX opset of the exported graphs (onnxruntime >= 1.14 runs it)."""

MANIFEST_NAME = "sam_onnx.json"


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
    Its outputs equal ``SamPredictor.decode`` (checked in tests/export/test_onnx.py).

    Args:
        model: ``transformers.SamModel`` (float32, eval).
    """

    def __init__(self, model) -> None:
        super().__init__()
        pe = model.prompt_encoder
        self.image_size = float(pe.input_image_size)
        self.gaussian = model.shared_image_embedding.positional_embedding  # (2, C/2)
        self.point_embed = nn.ModuleList(pe.point_embed)  # labels 0, 1, 2, 3
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
        for i, embed in enumerate(self.point_embed):
            emb = emb + (lab == i).to(emb.dtype) * embed.weight
        return emb

    def forward(  # noqa: D102
        self,
        image_embeddings: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        dec = self.decoder
        batch = point_coords.shape[0]
        sparse = self._embed_points(point_coords, point_labels)[:, None]  # (B, 1, N, C)
        has = has_mask_input.reshape(1, 1, 1, 1)
        dense = self.mask_embed(mask_input) * has + (1 - has) * self.no_mask_embed.weight.reshape(
            1, -1, 1, 1
        )
        src = image_embeddings + dense  # (B, C, E, E)
        _, channels, height, width = src.shape
        tokens = torch.cat([dec.iou_token.weight, dec.mask_tokens.weight], dim=0)
        tokens = torch.cat([tokens[None, None].expand(batch, 1, -1, -1), sparse], dim=2)
        queries, keys = dec.transformer(
            point_embeddings=tokens,
            image_embeddings=src,
            image_positional_embeddings=self.image_pe.expand(batch, -1, -1, -1),
            attention_similarity=None,
        )
        iou_out = queries[:, 0, 0]
        mask_out = queries[:, 0, 1 : 1 + dec.num_mask_tokens]
        src = keys[:, 0].transpose(1, 2).reshape(batch, channels, height, width)
        up = dec.activation(dec.upscale_layer_norm(dec.upscale_conv1(src)))
        up = dec.activation(dec.upscale_conv2(up))
        hyper = torch.stack(
            [mlp(mask_out[:, i]) for i, mlp in enumerate(dec.output_hypernetworks_mlps)], dim=1
        )
        b, c, h, w = up.shape
        masks = (hyper @ up.reshape(b, c, h * w)).reshape(b, -1, h, w)
        return masks, dec.iou_prediction_head(iou_out)


def _manifest(model, spec: str, files: dict[str, str], opset: int) -> dict[str, Any]:
    vc = model.config.vision_config
    side = int(vc.image_size)
    emb_side = side // int(vc.patch_size)
    channels = int(vc.output_channels)
    low = side // 4
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
                "point_coords": {
                    "shape": ["num_prompts", "num_points", 2],
                    "dtype": "float32",
                    "meaning": "xy in the resized frame (see coordinates)",
                },
                "point_labels": {
                    "shape": ["num_prompts", "num_points"],
                    "dtype": "float32",
                    "meaning": "1 foreground, 0 background, 2 box top-left, 3 box bottom-right, "
                    "-1 padding point",
                },
                "mask_input": {
                    "shape": ["num_prompts", 1, low, low],
                    "dtype": "float32",
                    "meaning": "low-res logits of an earlier output (zeros when unused)",
                },
                "has_mask_input": {
                    "shape": [1],
                    "dtype": "float32",
                    "meaning": "1 to use mask_input, 0 to ignore it",
                },
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


def export_sam_onnx(
    sam: str | os.PathLike | nn.Module,
    out_dir: str | os.PathLike,
    *,
    opset: int = ONNX_OPSET,
    encoder: bool = True,
) -> Path:
    """Write SAM's image encoder and prompt decoder as ONNX, plus a JSON manifest.

    Args:
        sam: A SAM checkpoint (hub id, alias or local folder, loaded config first) or a
            loaded ``transformers.SamModel``.
        out_dir: Output folder (created).
        opset: ONNX opset (default :data:`ONNX_OPSET`).
        encoder: Also export the image encoder (the decoder is always exported).

    Returns:
        Path of the manifest (``sam_onnx.json``) in ``out_dir``.

    Raises:
        ModelLoadError: The checkpoint cannot be loaded.
        ValueError: The model is not a SAM (v1) model (HQ-SAM and SAM 2 are not exported).
        ImportError: The ``onnx`` extra is not installed.
    """
    try:
        import onnx  # noqa: F401 - torch.onnx.export needs it
    except ImportError as exc:
        raise ImportError(
            "ONNX export needs the onnx package: pip install 'grounded-sam[onnx]'."
        ) from exc
    if isinstance(sam, nn.Module):
        model, spec = sam, type(sam).__name__
    else:
        from grounded_sam.sam.loading import load_sam_model

        model, spec = load_sam_model(sam, torch.device("cpu"), torch.float32), os.fspath(sam)
    model_type = getattr(model.config, "model_type", None)
    if model_type != "sam":
        raise ValueError(
            f"ONNX export supports SAM (model_type 'sam') only; {spec!r} is {model_type!r}. "
            "HQ-SAM's and SAM 2's decoders take further encoder features that this exporter "
            "does not describe."
        )
    model = model.to(device="cpu", dtype=torch.float32).eval()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    vc = model.config.vision_config
    side, emb_side = int(vc.image_size), int(vc.image_size) // int(vc.patch_size)
    channels, low = int(vc.output_channels), int(vc.image_size) // 4
    files: dict[str, str] = {"decoder": "decoder.onnx"}
    with torch.no_grad():
        if encoder:
            files["encoder"] = "encoder.onnx"
            logger.info("Exporting the SAM image encoder to %s", out / files["encoder"])
            torch.onnx.export(
                SamOnnxEncoder(model).eval(),
                (torch.zeros(1, 3, side, side),),
                str(out / files["encoder"]),
                input_names=["pixel_values"],
                output_names=["image_embeddings"],
                opset_version=opset,
                dynamo=False,
            )
        logger.info("Exporting the SAM prompt decoder to %s", out / files["decoder"])
        example = (
            torch.randn(1, channels, emb_side, emb_side),
            torch.rand(2, 3, 2) * side,
            torch.tensor([[1.0, 2.0, 3.0], [0.0, 1.0, -1.0]]),
            torch.zeros(2, 1, low, low),
            torch.zeros(1),
        )
        torch.onnx.export(
            SamOnnxDecoder(model).eval(),
            example,
            str(out / files["decoder"]),
            input_names=[
                "image_embeddings",
                "point_coords",
                "point_labels",
                "mask_input",
                "has_mask_input",
            ],
            output_names=["low_res_logits", "iou_predictions"],
            dynamic_axes={
                "point_coords": {0: "num_prompts", 1: "num_points"},
                "point_labels": {0: "num_prompts", 1: "num_points"},
                "mask_input": {0: "num_prompts"},
                "low_res_logits": {0: "num_prompts"},
                "iou_predictions": {0: "num_prompts"},
            },
            opset_version=opset,
            dynamo=False,
        )
    manifest = out / MANIFEST_NAME
    manifest.write_text(json.dumps(_manifest(model, spec, files, opset), indent=2) + "\n")
    return manifest
