"""The tracking flags' early check (config only, before any weights load)."""

from __future__ import annotations

import argparse

import pytest

from grounded_sam.cli.tracking import check_propagator


def _args(sam: str, propagator: str | None = None) -> argparse.Namespace:
    return argparse.Namespace(sam=sam, propagator=propagator)


def test_a_sam_that_cannot_propagate_needs_a_propagator(tiny_model_specs, video_sam_dir):
    sam1 = tiny_model_specs[0]
    with pytest.raises(ValueError, match=r"--sam .* is a SAM checkpoint.*add --propagator"):
        check_propagator(_args(sam1))
    check_propagator(_args(sam1, str(video_sam_dir)))  # a SAM 2.1 propagator: accepted
    check_propagator(_args(str(video_sam_dir)))  # SAM 2.1 grounds and propagates


def test_an_explicit_propagator_that_cannot_propagate_is_refused_before_loading(
    tiny_model_specs, video_sam_dir
):
    sam1 = tiny_model_specs[0]
    with pytest.raises(ValueError) as info:
        check_propagator(_args(str(video_sam_dir), sam1))
    message = str(info.value)
    assert message.startswith(f"--propagator {sam1} is a SAM checkpoint"), message
    assert "pass a SAM 2.1 checkpoint" in message and "\n" not in message
