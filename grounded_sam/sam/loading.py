"""Loading a transformers ``SamModel`` from a Hugging Face id or a local directory."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from grounded_sam.errors import ModelLoadError

__all__ = ["DEFAULT_SAM", "SAM_ALIASES", "load_sam_model"]

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
    from transformers import SamModel

    spec_str = os.fspath(spec)
    spec_str = SAM_ALIASES.get(spec_str.lower(), spec_str)
    path = Path(spec_str).expanduser()
    is_local = path.exists()
    if not is_local and (isinstance(spec, os.PathLike) or _looks_like_path(spec_str)):
        raise ModelLoadError(
            f"SAM model directory not found: {path}. Give an existing folder saved with "
            "SamModel.save_pretrained (config.json + model.safetensors), or a Hugging Face id "
            f"such as {DEFAULT_SAM!r}."
        )
    if is_local:
        if not path.is_dir() or not (path / "config.json").is_file():
            raise ModelLoadError(
                f"{path} is not a SAM model folder: expected config.json and model weights "
                "written by SamModel.save_pretrained."
            )
        source = str(path)
        logger.info("Loading SAM from local folder %s", path)
    else:
        source = spec_str
        logger.info("Loading SAM %s (downloads into the Hugging Face cache if needed)", source)
    try:
        model = SamModel.from_pretrained(source)
    except (OSError, ValueError, RuntimeError) as exc:
        hint = (
            "It could not be read; check that the folder holds a complete save_pretrained copy."
            if is_local
            else "It is not in the local Hugging Face cache and could not be downloaded "
            "(offline, or a wrong id). Download it on a connected machine with "
            f"`huggingface-cli download {source} --local-dir DIR` and pass sam='DIR', or "
            "check the spelling (e.g. facebook/sam-vit-base, facebook/sam-vit-large, "
            "facebook/sam-vit-huge)."
        )
        raise ModelLoadError(f"Could not load SAM model {spec_str!r}. {hint} ({exc})") from exc
    if model.__class__.__name__ != "SamModel":
        raise ModelLoadError(f"{spec_str!r} is not a SAM model (got {type(model).__name__}).")
    return model.to(device=device, dtype=dtype).eval()
