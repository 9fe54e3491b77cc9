"""The page shows indexing progress: set_image reports each stage, mapped onto gr.Progress."""

from __future__ import annotations

from pathlib import Path

from grounded_sam.app import callbacks as cb
from grounded_sam.app.ui import INDEX_STAGES, index_progress
from tests.app.conftest import write_image


def test_set_image_reports_every_indexing_stage(tiny_gs, tmp_path: Path) -> None:
    path = write_image(tmp_path / "small.png", (64, 48))
    stages: list[str] = []
    session = cb.Session()
    try:
        cb.set_image(session, tiny_gs, path, on_stage=stages.append)
        assert stages == list(INDEX_STAGES)
        assert session.index is not None and session.index_builds == 1
        cb.set_image(session, tiny_gs, path, on_stage=stages.append)  # same picture: reused
        assert stages == list(INDEX_STAGES) and session.index_builds == 1
    finally:
        session.close()


def test_index_progress_drives_the_indicator() -> None:
    calls: list[tuple[float, str]] = []
    on_stage = index_progress(lambda fraction, desc: calls.append((fraction, desc)))
    for name in INDEX_STAGES:
        on_stage(name)
    assert [round(f, 3) for f, _ in calls] == [0.0, 0.333, 0.667]
    assert calls[-1][1] == "Indexing the image: CLIP regions"
