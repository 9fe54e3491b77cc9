"""Loading a transformers ``SamModel`` from a Hugging Face id or a local directory."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch

from grounded_sam.errors import ModelLoadError
from grounded_sam.hub import HubModel, require_hub_models

__all__ = ["DEFAULT_SAM", "SAM_ALIASES", "load_sam_model", "sam_hub_model"]

logger = logging.getLogger(__name__)

DEFAULT_SAM = "facebook/sam-vit-base"
"""Default SAM checkpoint: ViT-B, the fastest of the three."""

SAM_ALIASES: dict[str, str] = {
    "vit_b": "facebook/sam-vit-base",
    "vit-b": "facebook/sam-vit-base",
    "base": "facebook/sam-vit-base",
    "vit_l": "facebook/sam-vit-large",
    "vit-l": "facebook/sam-vit-large",
    "large": "facebook/sam-vit-large",
    "vit_h": "facebook/sam-vit-huge",
    "vit-h": "facebook/sam-vit-huge",
    "huge": "facebook/sam-vit-huge",
}
"""Short names accepted for the three official checkpoints."""


def _looks_like_path(spec: str) -> bool:
    return spec.startswith(("/", "./", "../", "~")) or os.sep in spec.strip("/").split("/", 1)[-1]


def _local_model_type(config_file: Path) -> str | None:
    """``model_type`` of a local config.json (None when unreadable: from_pretrained reports it)."""
    try:
        value = json.loads(config_file.read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def sam_hub_model(spec: str | os.PathLike) -> HubModel | None:
    """The Hub repository ``spec`` names (None for a local folder or a path)."""
    spec_str = os.fspath(spec)
    repo = SAM_ALIASES.get(spec_str.lower(), spec_str)
    path = Path(repo).expanduser()
    if path.exists():
        return None
    if isinstance(spec, os.PathLike) or _looks_like_path(repo):
        raise _missing_folder(path)  # before any other model is looked at
    return HubModel(
        what=f"SAM model {repo!r}",
        repo_id=repo,
        files=(("config.json",), ("model.safetensors", "pytorch_model.bin")),
        fix=f"For SAM, on a connected machine run `hf download {repo} --local-dir DIR`, copy "
        "DIR over and pass sam='DIR' (--sam DIR).",
    )


def _missing_folder(path: Path) -> ModelLoadError:
    return ModelLoadError(
        f"SAM model directory not found: {path}. Give an existing folder saved with "
        "SamModel.save_pretrained (config.json + model.safetensors), or a Hugging Face id "
        f"such as {DEFAULT_SAM!r}."
    )


def load_sam_model(spec: str | os.PathLike, device: torch.device, dtype: torch.dtype):
    """Load a SAM model.

    Args:
        spec: A Hugging Face model id (``"facebook/sam-vit-huge"``), an alias (``"vit_b"``,
            ``"vit_l"``, ``"vit_h"``), or a local directory in ``save_pretrained`` layout
            (``config.json`` + ``model.safetensors``).
        device: Where to put the model.
        dtype: Weight precision.

    Returns:
        ``transformers.SamModel`` in eval mode on ``device`` with ``dtype`` weights.

    Raises:
        ModelLoadError: The model could not be found, downloaded or read. The message names
            the model and says how to use a local copy.
    """
    require_hub_models([sam_hub_model(spec)])  # fails in seconds when offline and not cached
    from safetensors import SafetensorError  # raised for a truncated / corrupt file
    from transformers import SamModel

    spec_str = os.fspath(spec)
    spec_str = SAM_ALIASES.get(spec_str.lower(), spec_str)
    path = Path(spec_str).expanduser()
    is_local = path.exists()
    if not is_local and (isinstance(spec, os.PathLike) or _looks_like_path(spec_str)):
        raise _missing_folder(path)
    if is_local:
        if not path.is_dir() or not (path / "config.json").is_file():
            raise ModelLoadError(
                f"{path} is not a SAM model folder: expected config.json and model weights "
                "written by SamModel.save_pretrained."
            )
        model_type = _local_model_type(path / "config.json")
        if model_type not in (None, "sam"):
            # SamModel.from_pretrained would "load" it with every weight newly random.
            raise ModelLoadError(
                f"{path} holds a {model_type!r} model, not SAM (config.json model_type must "
                "be 'sam'). Pass the folder of a SAM checkpoint."
            )
        source = str(path)
        logger.info("Loading SAM from local folder %s", path)
    else:
        source = spec_str
        logger.info("Loading SAM %s (downloads into the Hugging Face cache if needed)", source)
    try:
        model = SamModel.from_pretrained(source)
    except (OSError, ValueError, RuntimeError, SafetensorError) as exc:
        hint = (
            "It could not be read; check that the folder holds a complete save_pretrained copy."
            if is_local
            else "It is not in the local Hugging Face cache and could not be downloaded "
            "(offline, or a wrong id). Download it on a connected machine with "
            f"`hf download {source} --local-dir DIR` and pass sam='DIR', or "
            "check the spelling (e.g. facebook/sam-vit-base, facebook/sam-vit-large, "
            "facebook/sam-vit-huge)."
        )
        raise ModelLoadError(f"Could not load SAM model {spec_str!r}. {hint} ({exc})") from exc
    if model.__class__.__name__ != "SamModel":
        raise ModelLoadError(f"{spec_str!r} is not a SAM model (got {type(model).__name__}).")
    return model.to(device=device, dtype=dtype).eval()
