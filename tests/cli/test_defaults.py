"""The --help defaults (grounded_sam.cli.defaults, torch-free) equal the engine's defaults."""

from __future__ import annotations

import inspect

from grounded_sam.cli import defaults
from grounded_sam.clip.loading import DEFAULT_CLIP
from grounded_sam.labeling import FORMATS
from grounded_sam.pipeline import DEFAULT_INDEX_SETTINGS, GroundedSAM
from grounded_sam.sam.everything import EverythingSettings
from grounded_sam.sam.loading import DEFAULT_SAM


def test_model_defaults() -> None:
    assert (defaults.DEFAULT_SAM, defaults.DEFAULT_CLIP) == (DEFAULT_SAM, DEFAULT_CLIP)


def test_proposal_defaults() -> None:
    meta = EverythingSettings()
    assert defaults.EVERYTHING == {k: getattr(meta, k) for k in defaults.EVERYTHING}
    index = DEFAULT_INDEX_SETTINGS
    assert defaults.INDEX_PROPOSALS == {k: getattr(index, k) for k in defaults.INDEX_PROPOSALS}


def test_query_defaults_and_formats() -> None:
    params = inspect.signature(GroundedSAM.__init__).parameters
    assert defaults.QUERY == {k: params[k].default for k in defaults.QUERY}
    assert defaults.DATASET_FORMATS == FORMATS
    from grounded_sam.labeling.video import VIDEO_FORMATS

    assert defaults.VIDEO_DATASET_FORMATS == VIDEO_FORMATS
