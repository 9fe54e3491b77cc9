"""The web app with a tiny SAM 3 engine: the page builds, one image is indexed and queried."""

from __future__ import annotations

from pathlib import Path

import pytest

from grounded_sam.app import callbacks as cb
from tests.sam.sam3_models import tiny_sam3_folder


@pytest.fixture(scope="module")
def sam3_gs():
    from grounded_sam import GroundedSAM

    return GroundedSAM.from_pretrained(sam=str(tiny_sam3_folder()), device="cpu")


def test_page_builds_and_a_query_runs_with_sam3(sam3_gs, photo: Path) -> None:
    from grounded_sam.app.ui import build_app

    assert build_app(sam3_gs) is not None
    session = cb.Session()
    try:
        info = cb.set_image(session, sam3_gs, photo)
        assert "SAM 3" in info and "candidate region" not in info
        status = cb.text_query(session, sam3_gs, "dog, frisbee", 0.0, "low", 2)
        dets = session.result.dets
        assert 1 <= len(dets) <= 4, status
        assert status.startswith(f"Found {len(dets)} region")
        rows = cb.region_table(session)
        assert len(rows) == len(dets)
        assert {row[1] for row in rows} <= {"dog", "frisbee"}
        assert all(row[3] == "" for row in rows)  # no CLIP score
    finally:
        session.close()
