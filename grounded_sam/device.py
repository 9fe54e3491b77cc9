"""Device and precision selection, done once per model load (never at import)."""

from __future__ import annotations

import logging
import os

import torch

__all__ = ["DTYPE_ENV", "cpu_has_fast_bf16", "resolve_device", "resolve_dtype"]

#: Environment variable that overrides the automatic precision choice (``dtype=None``):
#: ``float32``, ``bfloat16``, ``float16`` or ``auto``. An explicit ``dtype`` argument wins.
DTYPE_ENV = "GROUNDED_SAM_DTYPE"

# CPU features with native bfloat16 matrix products (oneDNN uses them for bf16 matmuls).
_BF16_FLAGS = ("amx_bf16", "avx512_bf16")

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


def cpu_has_fast_bf16() -> str | None:
    """The CPU feature that makes bfloat16 fast here (AMX or AVX512-BF16), or None.

    Read from ``/proc/cpuinfo`` (Linux); None elsewhere or when it cannot be read.
    """
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return next((flag for flag in _BF16_FLAGS if flag in flags), None)
    except OSError:
        pass
    return None


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """Pick the floating-point precision for model weights.

    Args:
        dtype: ``"float32"``, ``"bfloat16"``, ``"float16"`` (or the torch dtype), or None for
            the automatic choice: the ``GROUNDED_SAM_DTYPE`` environment variable if set, else
            float16 on CUDA, bfloat16 on CPUs with AMX or AVX512-BF16 (native bf16 matrix
            products: ~2x faster end to end, masks agree to IoU ~0.98-0.99 with float32; see
            ``benchmarks/RESULTS.md``), float32 on other CPUs (half precision is slow there).
        device: The device the model will run on.

    Returns:
        The torch dtype.

    Raises:
        ValueError: The name is not one of the supported precisions.
    """
    if dtype is None:
        env = os.environ.get(DTYPE_ENV, "").strip()
        if env and env.lower() != "auto":
            try:
                return resolve_dtype(env, device)
            except ValueError as exc:
                raise ValueError(f"{DTYPE_ENV}={env!r}: {exc}") from exc
        if device.type == "cuda":
            return torch.float16
        if device.type == "cpu":
            feature = cpu_has_fast_bf16()
            if feature is not None:
                logger.info(
                    "CPU has %s: running in bfloat16 (pass dtype='float32' or set %s=float32 "
                    "for full precision).",
                    feature,
                    DTYPE_ENV,
                )
                return torch.bfloat16
        return torch.float32
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
