"""What every family's export shares: the prompt inputs and the ``torch.onnx.export`` calls."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

__all__ = [
    "PROMPT_AXES",
    "PROMPT_INPUTS",
    "prompt_inputs_manifest",
    "two_way",
    "write_graph",
    "write_graphs",
]

logger = logging.getLogger(__name__)

PROMPT_INPUTS = ["point_coords", "point_labels", "mask_input", "has_mask_input"]
"""Decoder inputs after the image features, in graph order (every family)."""

PROMPT_AXES: dict[str, dict[int, str]] = {
    "point_coords": {0: "num_prompts", 1: "num_points"},
    "point_labels": {0: "num_prompts", 1: "num_points"},
    "mask_input": {0: "num_prompts"},
}
"""Dynamic axes of the prompt inputs (every family)."""


def prompt_inputs_manifest(low: int, mask_note: str = "") -> dict[str, dict]:
    """The manifest entries of :data:`PROMPT_INPUTS` (every family).

    Args:
        low: Side L of the low-res mask frame.
        mask_note: Family-specific note appended to ``mask_input``'s meaning.
    """
    note = f"; {mask_note}" if mask_note else ""
    return {
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
            "meaning": f"low-res logits of an earlier output (zeros when unused{note})",
        },
        "has_mask_input": {
            "shape": [1],
            "dtype": "float32",
            "meaning": "1 to use mask_input, 0 to ignore it",
        },
    }


def two_way(
    decoder: nn.Module,
    output_tokens: torch.Tensor,
    sparse: torch.Tensor,
    src: torch.Tensor,
    image_pe: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A family's two-way transformer on B prompts, in graph-friendly form.

    Args:
        decoder: The family's transformers mask decoder (its ``transformer`` is used).
        output_tokens: (T0, C) the family's learned output tokens, in its order.
        sparse: (B, 1, N, C) prompt tokens.
        src: (B, C, E, E) image embedding + dense prompt embedding.
        image_pe: (1, C, E, E) image-wide positional encoding.

    Returns:
        ``(queries (B, T0 + N, C), image (B, C, E, E))`` after the transformer.
    """
    batch, channels, height, width = src.shape
    tokens = torch.cat([output_tokens[None, None].expand(batch, 1, -1, -1), sparse], dim=2)
    queries, keys = decoder.transformer(
        point_embeddings=tokens,
        image_embeddings=src,
        image_positional_embeddings=image_pe.expand(batch, -1, -1, -1),
        attention_similarity=None,
    )
    return queries[:, 0], keys[:, 0].transpose(1, 2).reshape(batch, channels, height, width)


def write_graph(
    module: nn.Module,
    example: tuple[torch.Tensor, ...],
    path: Path,
    inputs: list[str],
    outputs: list[str],
    opset: int,
    per_prompt: bool = False,
) -> None:
    """Trace ``module`` on ``example`` and write it to ``path``.

    ``per_prompt`` marks a decoder graph: the prompt inputs get :data:`PROMPT_AXES` and every
    output a dynamic first axis (``num_prompts``).

    The TorchScript exporter (``dynamo=False``) is used: it needs no onnxscript, and its
    graphs of all three families are checked against PyTorch in tests/deploy.
    """
    dynamic_axes = None
    if per_prompt:
        dynamic_axes = {**PROMPT_AXES, **{name: {0: "num_prompts"} for name in outputs}}
    torch.onnx.export(
        module.eval(),
        example,
        str(path),
        input_names=inputs,
        output_names=outputs,
        dynamic_axes=dynamic_axes,
        opset_version=opset,
        dynamo=False,
    )


def write_graphs(
    out: Path,
    opset: int,
    family: str,
    *,
    encoder: nn.Module | None,
    side: int,
    features: list[str],
    decoder: nn.Module,
    example: tuple[torch.Tensor, ...],
    outputs: list[str],
) -> dict[str, str]:
    """Write a family's ``decoder.onnx`` (and ``encoder.onnx``) into ``out``.

    Args:
        out: Folder to write into.
        opset: ONNX opset.
        family: The family's name for the log ("SAM", "HQ-SAM", "SAM 2").
        encoder: The encoder graph's module (``pixel_values`` (1, 3, side, side) ->
            ``features``), or None to export the decoder only.
        side: Side S of the square encoder input.
        features: Encoder outputs = the decoder's first inputs, in graph order.
        decoder: The decoder graph's module (``features``, then :data:`PROMPT_INPUTS`).
        example: Example decoder inputs to trace with.
        outputs: The decoder's output names.

    Returns:
        The manifest's ``files``: graph role -> file name.
    """
    files: dict[str, str] = {"decoder": "decoder.onnx"}
    if encoder is not None:
        files["encoder"] = "encoder.onnx"
        logger.info("Exporting the %s image encoder to %s", family, out / files["encoder"])
        write_graph(
            encoder,
            (torch.zeros(1, 3, side, side),),
            out / files["encoder"],
            ["pixel_values"],
            features,
            opset,
        )
    logger.info("Exporting the %s prompt decoder to %s", family, out / files["decoder"])
    write_graph(
        decoder,
        example,
        out / files["decoder"],
        [*features, *PROMPT_INPUTS],
        outputs,
        opset,
        per_prompt=True,
    )
    return files
