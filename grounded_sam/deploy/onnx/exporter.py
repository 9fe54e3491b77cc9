"""``export_sam_onnx``: load a checkpoint, pick its family, write the graphs + manifest.

The family's exporter (graph writer and manifest builder, one module per family) is named by
its record in the SAM family registry (:mod:`grounded_sam.sam.families`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch
from torch import nn

from grounded_sam.sam import families

__all__ = ["MANIFEST_NAME", "ONNX_OPSET", "export_sam_onnx"]

logger = logging.getLogger(__name__)

ONNX_OPSET = 17
"""ONNX opset of the exported graphs (onnxruntime >= 1.14 runs it)."""

MANIFEST_NAME = "sam_onnx.json"

def export_sam_onnx(
    sam: str | os.PathLike | nn.Module,
    out_dir: str | os.PathLike,
    *,
    opset: int = ONNX_OPSET,
    encoder: bool = True,
) -> Path:
    """Write a SAM-family image encoder and prompt decoder as ONNX, plus a JSON manifest.

    The family is the config's ``model_type``: ``sam`` (SAM), ``sam_hq`` (HQ-SAM) or ``sam2``
    (SAM 2 / 2.1); see :mod:`grounded_sam.deploy.onnx` for each family's graphs. The files are
    written into a temporary folder inside ``out_dir`` and moved into place only when every
    graph was exported, so a failed export leaves earlier files as they were. Existing files
    of the same names are replaced.

    Args:
        sam: A checkpoint (hub id, alias or local folder, loaded config first) or a loaded
            ``SamModel`` / ``SamHQModel`` / ``Sam2Model``.
        out_dir: Output folder (created).
        opset: ONNX opset (default :data:`ONNX_OPSET`).
        encoder: Also export the image encoder (the decoder is always exported).

    Returns:
        Path of the manifest (``sam_onnx.json``) in ``out_dir``.

    Raises:
        ModelLoadError: The checkpoint cannot be loaded (or is of no SAM family).
        ValueError: A loaded model of no exported family (nothing is written).
        ImportError: The ``onnx`` extra is not installed.
        OSError: ``out_dir`` cannot be created or written.
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
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    exported = [f for f in families.FAMILIES if f.onnx is not None]
    family = next((f for f in exported if model_type in f.model_types), None)
    if family is None:
        supported = ", ".join(repr(t) for f in exported for t in f.model_types)
        raise ValueError(
            f"ONNX export supports the SAM families (model_type {supported}); {spec!r} is "
            f"{model_type!r}."
        )
    # the family's registry record names its exporter (one module per family)
    write_graphs, make_manifest = family.onnx_exporter()
    model = model.to(device="cpu", dtype=torch.float32).eval()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".export-onnx-", dir=out))
    try:
        with torch.no_grad():
            files = write_graphs(model, staging, opset, encoder)
        manifest = make_manifest(model, spec, files, opset)
        (staging / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
        # graphs (and any external-data files of graphs over 2 GB) first, the manifest last
        for path in sorted(staging.iterdir(), key=lambda p: p.name == MANIFEST_NAME):
            os.replace(path, out / path.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out / MANIFEST_NAME
