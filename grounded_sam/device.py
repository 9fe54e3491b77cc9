"""Device and precision selection, done once per model load (never at import)."""

from __future__ import annotations

import logging

import torch

__all__ = ["resolve_device", "resolve_dtype"]

logger = logging.getLogger(__name__)

_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
}


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """Pick the device to run on.

    Args:
        device: ``"cuda"``, ``"cuda:1"``, ``"cpu"``, ``"mps"``, a ``torch.device``, or None
            for automatic choice (CUDA when present, else CPU).

    Returns:
        The resolved ``torch.device``.

    Raises:
        ValueError: The name is not a device, or CUDA was asked for but is not available.
    """
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(
            f"Unknown device {device!r}: use 'cpu', 'cuda', 'cuda:N' or leave it unset "
            "to pick CUDA when present."
        ) from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"Device {device!r} was requested but CUDA is not available on this machine: "
            "use device='cpu' or leave it unset."
        )
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"Device {device!r} was requested but MPS is not available.")
    return resolved


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """Pick the floating-point precision for model weights.

    Args:
        dtype: ``"float32"``, ``"bfloat16"``, ``"float16"`` (or the torch dtype), or None for
            the default: float32 on CPU (half precision is slow there) and float16 on CUDA.
        device: The device the model will run on.

    Returns:
        The torch dtype.

    Raises:
        ValueError: The name is not one of the supported precisions.
    """
    if dtype is None:
        return torch.float16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        if dtype not in (torch.float32, torch.bfloat16, torch.float16):
            raise ValueError(f"Unsupported dtype {dtype}: use float32, bfloat16 or float16.")
        return dtype
    key = str(dtype).lower().removeprefix("torch.")
    if key not in _DTYPES:
        raise ValueError(f"Unsupported dtype {dtype!r}: use 'float32', 'bfloat16' or 'float16'.")
    resolved = _DTYPES[key]
    if resolved == torch.float16 and device.type == "cpu":
        logger.warning(
            "float16 on CPU is slow and poorly supported; bfloat16 or float32 is better."
        )
    return resolved
