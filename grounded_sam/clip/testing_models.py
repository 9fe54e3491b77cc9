"""A tiny random open_clip model for fast tests, saved in open_clip's ``local-dir:`` layout.

The model is a real open_clip ``CLIP`` (ViT image tower + transformer text tower with the real
49408-token BPE vocabulary), only very small, so it exercises the same loading, tokenization and
preprocessing code as a pretrained checkpoint.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

__all__ = ["TINY_CLIP_CONFIG", "save_tiny_clip"]

logger = logging.getLogger(__name__)

#: ``open_clip_config.json`` content of the tiny model (``model_cfg`` + ``preprocess_cfg``).
TINY_CLIP_CONFIG: dict[str, Any] = {
    "model_cfg": {
        "embed_dim": 32,
        "vision_cfg": {
            "image_size": 64,
            "layers": 2,
            "width": 64,
            "head_width": 32,
            "patch_size": 16,
        },
        "text_cfg": {
            "context_length": 77,
            "vocab_size": 49408,
            "width": 32,
            "heads": 2,
            "layers": 2,
        },
    },
    "preprocess_cfg": {
        "mean": [0.48145466, 0.4578275, 0.40821073],
        "std": [0.26862954, 0.26130258, 0.27577711],
        "interpolation": "bicubic",
        "resize_mode": "shortest",
    },
}

_WEIGHTS_NAME = "open_clip_model.safetensors"


def save_tiny_clip(directory: str | Path, seed: int = 0) -> Path:
    """Write a tiny, seeded, randomly initialised open_clip model to ``directory``.

    The directory gets ``open_clip_config.json`` and ``open_clip_model.safetensors`` (weights
    stored in float16 to keep the file small, about 3.3 MB; the token embedding table dominates).
    Load it with ``load_clip(f"local-dir:{directory}")``. The same seed always gives the same
    weights, and the global torch RNG state is left untouched.

    Args:
        directory: Target directory; created if missing. Existing files of the same name are
            overwritten.
        seed: Seed for the random weights.

    Returns:
        The directory as a ``Path``.
    """
    from open_clip.model import CLIP
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model_cfg = json.loads(json.dumps(TINY_CLIP_CONFIG["model_cfg"]))  # deep copy
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIP(**model_cfg)
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(directory / _WEIGHTS_NAME))
    with open(directory / "open_clip_config.json", "w", encoding="utf-8") as f:
        json.dump(TINY_CLIP_CONFIG, f, indent=2)
    logger.debug("Saved tiny open_clip model to %s", directory)
    return directory
