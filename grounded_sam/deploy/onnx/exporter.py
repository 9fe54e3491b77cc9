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

__all__ = [
    "ENCODER_NAME",
    "MANIFEST_NAME",
    "MIN_OPSET",
    "ONNX_OPSET",
    "check_opset",
    "export_sam_onnx",
    "max_opset",
]

logger = logging.getLogger(__name__)

ONNX_OPSET = 17
"""ONNX opset of the exported graphs (onnxruntime >= 1.14 runs it)."""

MIN_OPSET = 14
"""Lowest opset the graphs can be written at: their attention (``scaled_dot_product_attention``)
exports from opset 14 on."""

MANIFEST_NAME = "sam_onnx.json"
ENCODER_NAME = "encoder.onnx"

_MAX_PARSED_ENCODER_BYTES = 64 << 20
"""A stale encoder.onnx is parsed (for its external-data files) only up to this size: a graph
whose weights are external is small, a larger one holds its weights itself."""


def max_opset() -> int:
    """Highest opset torch's TorchScript exporter (the one used, ``dynamo=False``) writes.

    Read from torch (``torch.onnx._constants.ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET``: 20 in
    torch 2.5 to 2.14); above it torch only warns and writes graphs it does not support.
    """
    try:
        from torch.onnx import _constants
    except ImportError:  # pragma: no cover - a torch without the private module
        return 20
    value = getattr(
        _constants, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", getattr(_constants, "ONNX_MAX_OPSET", 20)
    )
    return int(value)


def check_opset(opset: object) -> int:
    """``opset`` if the graphs can be exported at it.

    Raises:
        ValueError: Not an integer in ``MIN_OPSET`` .. :func:`max_opset` (torch's exporter
            either fails with a traceback outside it, or, above its maximum, only warns).
    """
    top = max_opset()
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= top:
        raise ValueError(
            f"opset must be an integer from {MIN_OPSET} to {top}, got {opset!r}: {top} is the "
            f"highest torch {torch.__version__}'s ONNX (TorchScript) exporter writes, and "
            f"{MIN_OPSET} the lowest with the attention these graphs use. The default "
            f"{ONNX_OPSET} runs on onnxruntime >= 1.14."
        )
    return opset


def _external_data_files(graph: Path) -> set[str]:
    """Names of the external-data files next to ``graph`` that it refers to (plain names)."""
    if graph.stat().st_size > _MAX_PARSED_ENCODER_BYTES:
        return set()
    try:
        import onnx

        model = onnx.load(str(graph), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - a corrupt stale graph: remove the graph alone
        logger.debug("Could not parse %s for its external data: %s", graph, exc)
        return set()
    names = set()
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location" and Path(entry.value).name == entry.value:
                names.add(entry.value)
    return names - {".", ".."}


def _check_encoder_slot(out: Path) -> None:
    """Refuse a decoder-only export into ``out`` when its encoder.onnx cannot be removed."""
    stale = out / ENCODER_NAME
    if os.path.lexists(stale) and not (stale.is_symlink() or stale.is_file()):
        raise ValueError(
            f"{stale} is in the way of a decoder-only export (a folder or special file, not an "
            "encoder of an earlier export); remove it or choose another output folder."
        )


def _remove_stale_encoder(out: Path, written: set[str]) -> None:
    """Remove ``out``'s encoder.onnx (and its external-data files) of an earlier export.

    A decoder-only export must not leave an encoder of another model (or export) beside the
    new decoder, where a reader would pair the two. A symlink is removed, not its target.
    """
    stale = out / ENCODER_NAME
    if not os.path.lexists(stale):
        return
    names = [] if stale.is_symlink() else sorted(_external_data_files(stale) - written)
    stale.unlink()
    for name in names:
        data = out / name
        if name != MANIFEST_NAME and data.is_file() and not data.is_symlink():
            data.unlink()
    logger.warning(
        "Removed %s (and %d external-data file(s)) of an earlier export: a decoder-only export "
        "does not pair with an older encoder.",
        stale,
        len(names),
    )


def _no_exporter(spec: str, model_type: object) -> ValueError:
    """The one-line refusal of a checkpoint of no exported family (a text grounder: SAM 3)."""
    exported = [f for f in families.FAMILIES if f.onnx is not None]
    supported = ", ".join(repr(t) for f in exported for t in f.model_types)
    grounder = families.grounder_for_model_type(model_type if isinstance(model_type, str) else None)
    if grounder is None:
        return ValueError(
            f"ONNX export supports the SAM families (model_type {supported}); {spec!r} is "
            f"{model_type!r}."
        )
    return ValueError(
        f"ONNX export supports the SAM families (model_type {supported}); {spec!r} is a "
        f"{grounder.title} checkpoint ({model_type!r}), a text-prompted detector with no ONNX "
        "exporter here: export a SAM-family checkpoint instead (e.g. 'vit_b' or 'sam2.1_t'; "
        "CLI: --sam vit_b)."
    )


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
    of the same names are replaced; a decoder-only export (``encoder=False``) also removes an
    ``encoder.onnx`` (and its external-data files) of an earlier export from ``out_dir``, so
    the folder never pairs the new decoder with an older encoder.

    Args:
        sam: A checkpoint (hub id, alias or local folder, loaded config first) or a loaded
            ``SamModel`` / ``SamHQModel`` / ``Sam2Model``.
        out_dir: Output folder (created).
        opset: ONNX opset (default :data:`ONNX_OPSET`), from :data:`MIN_OPSET` to
            :func:`max_opset` (see :func:`check_opset`).
        encoder: Also export the image encoder (the decoder is always exported).

    Returns:
        Path of the manifest (``sam_onnx.json``) in ``out_dir``.

    Raises:
        ModelLoadError: The checkpoint cannot be loaded (or is of no SAM family).
        ValueError: An opset out of range, or a model of no exported family (nothing is
            written); a SAM 3 checkpoint is refused from its config, before any weights load.
        ImportError: The ``onnx`` extra is not installed.
        OSError: ``out_dir`` cannot be created or written.
    """
    check_opset(opset)
    if isinstance(sam, nn.Module):
        model, spec = sam, type(sam).__name__
    else:
        from grounded_sam.sam.loading import resolve_sam_checkpoint

        model, spec = None, os.fspath(sam)
        ckpt = resolve_sam_checkpoint(sam)  # its config only: no weights are read yet
        if ckpt.grounder is not None:
            raise _no_exporter(spec, ckpt.model_type)
    try:
        import onnx  # noqa: F401 - torch.onnx.export needs it
    except ImportError as exc:
        raise ImportError(
            "ONNX export needs the onnx package: pip install -e '.[onnx]' from a clone."
        ) from exc
    if model is None:
        from grounded_sam.sam.loading import load_sam_model

        model = load_sam_model(sam, torch.device("cpu"), torch.float32)
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    exported = [f for f in families.FAMILIES if f.onnx is not None]
    family = next((f for f in exported if model_type in f.model_types), None)
    if family is None:
        raise _no_exporter(spec, model_type)
    # the family's registry record names its exporter (one module per family)
    write_graphs, make_manifest = family.onnx_exporter()
    model = model.to(device="cpu", dtype=torch.float32).eval()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not encoder:
        _check_encoder_slot(out)
    staging = Path(tempfile.mkdtemp(prefix=".export-onnx-", dir=out))
    try:
        with torch.no_grad():
            files = write_graphs(model, staging, opset, encoder)
        manifest = make_manifest(model, spec, files, opset)
        (staging / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
        # graphs (and any external-data files of graphs over 2 GB) first, the manifest last
        written = sorted(staging.iterdir(), key=lambda p: p.name == MANIFEST_NAME)
        for path in written[:-1]:
            os.replace(path, out / path.name)
        if not encoder:
            _remove_stale_encoder(out, {p.name for p in written})
        os.replace(written[-1], out / MANIFEST_NAME)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out / MANIFEST_NAME
