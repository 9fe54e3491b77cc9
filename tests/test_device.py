"""Device and precision selection: the automatic dtype follows the hardware, overridably."""

from __future__ import annotations

import logging

import pytest
import torch

from grounded_sam import device as device_mod
from grounded_sam.device import DTYPE_ENV, cpu_has_fast_bf16, resolve_device, resolve_dtype

CPU = torch.device("cpu")


@pytest.fixture
def auto(monkeypatch):
    """The automatic choice, without the test-suite's float32 pin."""
    monkeypatch.delenv(DTYPE_ENV, raising=False)
    return monkeypatch


@pytest.mark.parametrize("feature", ["amx_bf16", "avx512_bf16"])
def test_bf16_cpu_gets_bfloat16(auto, feature, caplog):
    auto.setattr(device_mod, "cpu_has_fast_bf16", lambda: feature)
    with caplog.at_level(logging.INFO, logger="grounded_sam.device"):
        assert resolve_dtype(None, CPU) == torch.bfloat16
    assert feature in caplog.text and "float32" in caplog.text  # logged, says how to override


def test_other_cpu_gets_float32(auto):
    auto.setattr(device_mod, "cpu_has_fast_bf16", lambda: None)
    assert resolve_dtype(None, CPU) == torch.float32


def test_cuda_gets_float16(auto):
    auto.setattr(device_mod, "cpu_has_fast_bf16", lambda: "amx_bf16")
    assert resolve_dtype(None, torch.device("cuda")) == torch.float16


def test_explicit_dtype_and_environment_override(auto):
    auto.setattr(device_mod, "cpu_has_fast_bf16", lambda: "amx_bf16")
    assert resolve_dtype("float32", CPU) == torch.float32
    assert resolve_dtype(torch.float32, CPU) == torch.float32
    auto.setenv(DTYPE_ENV, "float32")
    assert resolve_dtype(None, CPU) == torch.float32
    auto.setenv(DTYPE_ENV, "auto")
    assert resolve_dtype(None, CPU) == torch.bfloat16
    auto.setenv(DTYPE_ENV, "int8")
    with pytest.raises(ValueError, match=DTYPE_ENV):
        resolve_dtype(None, CPU)


def test_detection_matches_cpuinfo():
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            text = f.read()
    except OSError:
        pytest.skip("no /proc/cpuinfo")
    has = "amx_bf16" in text or "avx512_bf16" in text
    assert (cpu_has_fast_bf16() is not None) == has


def test_suite_default_is_pinned_to_float32():
    """Every other test sees float32 from dtype=None, on any CPU."""
    assert resolve_dtype(None, CPU) == torch.float32


def test_bad_names():
    with pytest.raises(ValueError, match="Unsupported dtype"):
        resolve_dtype("float64", CPU)
    with pytest.raises(ValueError, match="Unknown device"):
        resolve_device("gpu0")
