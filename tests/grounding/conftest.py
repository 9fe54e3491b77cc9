"""Oracle-scene engines shared by the grounding tests."""

from __future__ import annotations

import pytest

from grounded_sam import EverythingSettings, GroundedSAM

from .oracle import OracleSam, OracleScorer


def oracle_engine(scene, aliases=None, box_confusions=None, **kwargs) -> GroundedSAM:
    """A GroundedSAM whose SAM and CLIP are oracles of ``scene``."""
    return GroundedSAM(
        OracleSam(scene, box_confusions=box_confusions),
        OracleScorer(scene, aliases=aliases),
        proposal_settings=EverythingSettings(points_per_side=12),
        **{"threshold": 0.3, **kwargs},
    )


@pytest.fixture
def make_engine():
    return oracle_engine
