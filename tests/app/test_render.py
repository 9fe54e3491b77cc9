"""What the page shows: the overlay, region details, the models line."""

from __future__ import annotations

import numpy as np

from grounded_sam.app import callbacks as cb
from tests.app.conftest import synthetic_result


def test_describe_region_under_a_click() -> None:
    session = cb.Session()
    assert "type a phrase first" in cb.describe_region(session, 1, 1)
    synthetic_result(session)
    small = cb.describe_region(session, 12, 15)
    assert "**cup**" in small and "confidence 0.600" in small and "CLIP score 0.270" in small
    assert "SAM IoU 0.880" in small and "2 regions overlap here" in small
    big = cb.describe_region(session, 40, 30)
    assert "**table**" in big and "confidence 0.900" in big and "overlap" not in big
    assert cb.describe_region(session, 55, 2) == "No region at (55, 2)."
    assert "**table**" in cb.describe_row(session, 0)
    assert cb.describe_row(session, 5) == "No such region."


def test_render_and_opacity() -> None:
    session = cb.Session()
    assert cb.render(session) is None
    synthetic_result(session)
    none = cb.render(session, 0.0)
    full = cb.render(session, 1.0)
    half = cb.render(session, 0.5)
    assert none.shape == full.shape == half.shape == (40, 60, 3)
    inside = (slice(25, 30), slice(30, 40))  # in the big mask, away from boxes and labels
    assert np.array_equal(none[inside], session.image[inside])
    assert not np.array_equal(full[inside], none[inside])
    between = np.abs(half[inside].astype(int) - none[inside]).mean()
    assert 0 < between < np.abs(full[inside].astype(int) - none[inside]).mean()
    # Re-rendering never touches the engine or the result.
    assert session.result.dets.mask.shape == (2, 40, 60)


def test_models_line(tiny_gs) -> None:
    line = cb.models_markdown(tiny_gs)
    assert "SAM" in line and "CLIP" in line and "cpu" in line and "float32" in line
