"""What every family's export shares: the prompt inputs and one ``torch.onnx.export`` call."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

__all__ = ["PROMPT_AXES", "PROMPT_INPUTS", "write_graph"]

PROMPT_INPUTS = ["point_coords", "point_labels", "mask_input", "has_mask_input"]
"""Decoder inputs after the image features, in graph order (every family)."""

PROMPT_AXES: dict[str, dict[int, str]] = {
    "point_coords": {0: "num_prompts", 1: "num_points"},
    "point_labels": {0: "num_prompts", 1: "num_points"},
    "mask_input": {0: "num_prompts"},
}
"""Dynamic axes of the prompt inputs (every family)."""


def write_graph(
    module: nn.Module,
    example: tuple[torch.Tensor, ...],
    path: Path,
    inputs: list[str],
    outputs: list[str],
    opset: int,
    dynamic_axes: dict[str, dict[int, str]] | None = None,
) -> None:
    """Trace ``module`` on ``example`` and write it to ``path``.

    The TorchScript exporter (``dynamo=False``) is used: it needs no onnxscript, and its
    graphs of all three families are checked against PyTorch in tests/export.
    """
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
