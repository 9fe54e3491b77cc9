"""Checks of a user-supplied open_clip model folder, before open_clip builds anything.

open_clip trusts its config and checkpoint: a config with huge sizes allocates tens of GB
before any error, and a checkpoint whose positional embedding has another length than the
config's is silently interpolated to fit (a different model than the one trained). Here,
before the model is built:

* every size in ``model_cfg`` is a positive integer within :data:`CONFIG_BOUNDS`, and the
  parameter count they imply is at most :data:`MAX_PARAMETERS`;
* the config and weights are regular, readable files (a FIFO would block the load forever;
  an unreadable file gets its own message, not "No such file");
* the checkpoint's text and image positional embeddings have exactly the rows the config
  implies (read from the safetensors header, or a memory-mapped ``torch.load`` of the zip
  checkpoint formats; nothing else is loaded).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from grounded_sam.hub import check_readable_file

__all__ = [
    "CONFIG_BOUNDS",
    "MAX_PARAMETERS",
    "ConfigError",
    "check_local_model",
    "check_model_config",
    "check_positional_embeddings",
    "find_checkpoint",
    "read_config",
]

logger = logging.getLogger(__name__)

#: Largest model accepted, in parameters: twice the largest open_clip model (EVA02-E-14+,
#: about 5 billion); 10 billion float32 parameters are 40 GB.
MAX_PARAMETERS = 10_000_000_000

#: Largest value of each size in an open_clip ``model_cfg`` (``vision_cfg.*``, ``text_cfg.*``
#: or top level); the largest released models use a fraction of each.
CONFIG_BOUNDS: dict[str, int] = {
    "embed_dim": 16_384,
    "width": 16_384,
    "layers": 256,
    "heads": 1_024,
    "head_width": 4_096,
    "mlp_ratio": 64,
    "patch_size": 1_024,
    "image_size": 4_096,
    "context_length": 4_096,
    "vocab_size": 2_000_000,
    "image_tokens": 65_536,  # (image_size / patch_size) ** 2
}

#: What open_clip builds when a config leaves a size out (``CLIPVisionCfg`` / ``CLIPTextCfg``).
_VISION_DEFAULTS = {"layers": 12, "width": 768, "head_width": 64, "mlp_ratio": 4.0,
                    "patch_size": 16, "image_size": 224}  # fmt: skip
_TEXT_DEFAULTS = {"context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8,
                  "layers": 12, "mlp_ratio": 4.0}  # fmt: skip

#: Checkpoint files open_clip looks for in a folder, in its order of preference.
_PREFERRED = (
    "open_clip_model.safetensors", "open_clip_pytorch_model.safetensors",
    "open_clip_pytorch_model.bin", "open_clip_pytorch_model.pth",
    "model.safetensors", "pytorch_model.bin", "pytorch_model.pth", "model.pth",
)  # fmt: skip


class ConfigError(ValueError):
    """What is wrong with a config or checkpoint (the loader wraps it in a ModelLoadError)."""


def read_config(path: Path) -> dict[str, Any]:
    """``open_clip_config.json`` as a dict (readable regular file, valid JSON, a ``model_cfg``).

    Raises:
        grounded_sam.errors.ModelLoadError: Unreadable or not a regular file.
        ConfigError: Not JSON, or no ``model_cfg`` object.
    """
    check_readable_file(path, "the CLIP config")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"{path} is not valid JSON ({exc}).") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("model_cfg"), dict):
        raise ConfigError(f"{path} has no 'model_cfg' object (an open_clip config has one).")
    return doc


def _size(cfg: dict[str, Any], key: str, where: str, default: float, real: bool = False) -> float:
    value = cfg.get(key, default)
    bound = CONFIG_BOUNDS[key]
    ok_type = isinstance(value, (int, float)) if real else isinstance(value, int)
    if isinstance(value, bool) or not ok_type or not 0 < value <= bound:
        kind = "number" if real else "integer"
        raise ConfigError(f"{where}.{key} must be a positive {kind} <= {bound:,}, got {value!r}.")
    return value


def _pair(cfg: dict[str, Any], key: str, where: str, default: int) -> tuple[int, int]:
    value = cfg.get(key, default)
    if isinstance(value, (list, tuple)) and len(value) == 2:
        h = _size({key: value[0]}, key, where, default)
        w = _size({key: value[1]}, key, where, default)
        return int(h), int(w)
    side = int(_size(cfg, key, where, default))
    return side, side


def _vision(cfg: dict[str, Any]) -> tuple[int, int | None]:
    """(parameters, positional-embedding rows or None) of the image tower."""
    where = "model_cfg.vision_cfg"
    if cfg.get("timm_model_name"):
        return 0, None  # a named timm model: its sizes are timm's
    d = _VISION_DEFAULTS
    width = int(_size(cfg, "width", where, d["width"]))
    mlp = float(_size(cfg, "mlp_ratio", where, d["mlp_ratio"], real=True))
    layers = cfg.get("layers", d["layers"])
    if isinstance(layers, (list, tuple)):  # ModifiedResNet: four stages, 4x wider at the end
        if len(layers) != 4:
            raise ConfigError(f"{where}.layers must be an integer or 4 integers, got {layers!r}.")
        blocks = sum(int(_size({"layers": n}, "layers", where, 1)) for n in layers)
        _pair(cfg, "image_size", where, d["image_size"])
        return blocks * 17 * (8 * width) ** 2, None
    layers = int(_size(cfg, "layers", where, d["layers"]))
    if "head_width" in cfg:
        _size(cfg, "head_width", where, d["head_width"])
    patch_h, patch_w = _pair(cfg, "patch_size", where, d["patch_size"])
    image_h, image_w = _pair(cfg, "image_size", where, d["image_size"])
    tokens = (image_h // patch_h) * (image_w // patch_w)
    if not 0 < tokens <= CONFIG_BOUNDS["image_tokens"]:
        raise ConfigError(
            f"{where}: image_size {image_h}x{image_w} with patch_size {patch_h}x{patch_w} gives "
            f"{tokens:,} image tokens; it must be between 1 and {CONFIG_BOUNDS['image_tokens']:,}."
        )
    per_layer = (4 + 2 * mlp) * width**2
    params = layers * per_layer + (tokens + 1) * width + 3 * patch_h * patch_w * width
    return int(params), tokens + 1


def _text(cfg: dict[str, Any]) -> tuple[int, int | None]:
    """(parameters, positional-embedding rows or None) of the text tower."""
    where = "model_cfg.text_cfg"
    d = _TEXT_DEFAULTS
    context = int(_size(cfg, "context_length", where, d["context_length"]))
    vocab = int(_size(cfg, "vocab_size", where, d["vocab_size"]))
    if cfg.get("hf_model_name"):
        return 0, None  # a named Hugging Face text model: its sizes are its own
    width = int(_size(cfg, "width", where, d["width"]))
    _size(cfg, "heads", where, d["heads"])
    layers = int(_size(cfg, "layers", where, d["layers"]))
    mlp = float(_size(cfg, "mlp_ratio", where, d["mlp_ratio"], real=True))
    rows = context + (1 if cfg.get("embed_cls") else 0)
    params = layers * (4 + 2 * mlp) * width**2 + (vocab + rows) * width
    return int(params), rows


def check_model_config(model_cfg: dict[str, Any]) -> dict[str, int | None]:
    """Check an open_clip ``model_cfg`` against :data:`CONFIG_BOUNDS` and :data:`MAX_PARAMETERS`.

    Args:
        model_cfg: The ``model_cfg`` of an ``open_clip_config.json``.

    Returns:
        The positional-embedding rows the config implies: ``{"visual": rows or None,
        "text": rows or None}`` (None: not a tower with a learned table of its own).

    Raises:
        ConfigError: A size that is not a positive integer, above its bound, or a model of
            more than :data:`MAX_PARAMETERS` parameters (checked from the sizes alone).
    """
    embed = int(_size(model_cfg, "embed_dim", "model_cfg", 512))
    vision = model_cfg.get("vision_cfg", {})
    text = model_cfg.get("text_cfg", {})
    if not isinstance(vision, dict) or not isinstance(text, dict):
        raise ConfigError("model_cfg.vision_cfg and model_cfg.text_cfg must be JSON objects.")
    v_params, v_rows = _vision(vision)
    t_params, t_rows = _text(text)
    total = v_params + t_params + 2 * embed * CONFIG_BOUNDS["width"]  # projections, at most
    if total > MAX_PARAMETERS:
        raise ConfigError(
            f"the config describes a model of about {total / 1e9:,.0f} billion parameters "
            f"(at least {4 * total / 2**30:,.0f} GiB in float32); the limit is "
            f"{MAX_PARAMETERS / 1e9:.0f} billion. Check the sizes in model_cfg."
        )
    return {"visual": v_rows, "text": t_rows}


def find_checkpoint(folder: Path) -> Path | None:
    """The weights file open_clip picks in ``folder`` (its order of preference), or None."""
    found = sorted([*folder.glob("*.safetensors"), *folder.glob("*.bin"), *folder.glob("*.pth")])
    if not found:
        return None
    preferred = [p for p in found if p.name in _PREFERRED]
    if preferred:
        return min(preferred, key=lambda p: _PREFERRED.index(p.name))
    found.sort(key=lambda p: p.suffix != ".safetensors")
    return found[0]


def _shapes(path: Path, keys: tuple[str, ...]) -> dict[str, tuple[int, ...]]:
    """Shapes of ``keys`` in a checkpoint, without loading its tensors (empty if unknown)."""
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                names = set(f.keys())
                return {k: tuple(f.get_slice(k).get_shape()) for k in keys if k in names}
        except Exception as exc:  # noqa: BLE001 - open_clip reports a broken file itself
            logger.debug("Could not read the header of %s: %s", path, exc)
            return {}
    import torch

    try:  # zip checkpoints map lazily; legacy pickles are left to open_clip
        state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # noqa: BLE001
        logger.debug("Could not map %s: %s", path, exc)
        return {}
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        return {}
    out = {}
    for key in keys:
        for name in (key, f"module.{key}"):
            value = state.get(name)
            if hasattr(value, "shape"):
                out[key] = tuple(value.shape)
                break
    return out


def check_positional_embeddings(checkpoint: Path, rows: dict[str, int | None]) -> None:
    """Refuse a checkpoint whose positional embeddings do not have the config's length.

    Args:
        checkpoint: The weights file.
        rows: From :func:`check_model_config`.

    Raises:
        ConfigError: Naming the table, both lengths and the fix (open_clip would otherwise
            interpolate the table to fit, silently giving another model).
    """
    wanted = {
        "visual.positional_embedding": ("image", rows.get("visual"), "image_size / patch_size"),
        "positional_embedding": ("text", rows.get("text"), "text_cfg.context_length"),
        "text.positional_embedding": ("text", rows.get("text"), "text_cfg.context_length"),
    }
    shapes = _shapes(checkpoint, tuple(k for k, (_, n, _) in wanted.items() if n is not None))
    for key, shape in shapes.items():
        tower, expected, setting = wanted[key]
        if shape and expected is not None and shape[0] != expected:
            raise ConfigError(
                f"the {tower} positional embedding in {checkpoint.name} has {shape[0]} rows but "
                f"the config implies {expected} ({setting}); open_clip would silently resize "
                "it. Use the config these weights were trained with."
            )


def check_local_model(folder: Path) -> None:
    """All the checks above for an open_clip ``local-dir:`` folder.

    Raises:
        grounded_sam.errors.ModelLoadError: An unreadable or special config or weights file.
        ConfigError: A bad config, or weights that do not fit it.
    """
    doc = read_config(folder / "open_clip_config.json")
    rows = check_model_config(doc["model_cfg"])
    checkpoint = find_checkpoint(folder)
    if checkpoint is not None:
        check_readable_file(checkpoint, "the CLIP weights")
        check_positional_embeddings(checkpoint, rows)
