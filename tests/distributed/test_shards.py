"""Parquet shards: exact round trip of the instance records, atomic and unique files."""

from __future__ import annotations

from pathlib import Path

import pytest

from grounded_sam.export.records import detections_to_records
from tests.export.conftest import CLASSES, scene_detections

pytest.importorskip("pyarrow", reason="pyarrow comes with ray[data]")

from grounded_sam.distributed.shards import (  # noqa: E402
    list_shards,
    read_rows,
    row_from_records,
    write_shard,
)


def test_records_round_trip_exactly(tmp_path: Path) -> None:
    records = detections_to_records(scene_detections(60, 80, CLASSES), (60, 80))
    assert len(records) == 3 and all(r["mask"]["counts"] for r in records)
    rows = [
        row_from_records("a.jpg", "/x/a.jpg", 123, (60, 80), records),
        row_from_records("b.jpg", "/x/b.jpg", 7, None, error="broken", stage="decode"),
    ]
    shard = write_shard(tmp_path, "run1", rows)
    assert shard.name.startswith("run1-") and shard.suffix == ".parquet"
    got = {r.rel: r for r in read_rows(tmp_path)}
    assert got["a.jpg"].records() == records
    assert (got["a.jpg"].height, got["a.jpg"].width, got["a.jpg"].bytes) == (60, 80, 123)
    assert got["a.jpg"].error is None and got["a.jpg"].stage is None
    assert (got["b.jpg"].error, got["b.jpg"].stage, got["b.jpg"].records()) == (
        "broken", "decode", []
    )  # fmt: skip


def test_unique_names_and_unfinished_writes_are_ignored(tmp_path: Path) -> None:
    names = {write_shard(tmp_path, "run", []).name for _ in range(5)}
    assert len(names) == 5
    (tmp_path / ".run-x.parquet.tmp").write_bytes(b"half a shard")
    assert len(list_shards(tmp_path)) == 5 and not list(read_rows(tmp_path))


def test_unreadable_shard_is_skipped_with_a_warning(tmp_path: Path, caplog) -> None:
    write_shard(tmp_path, "run", [row_from_records("a.jpg", "/a.jpg", 1, (2, 2))])
    (tmp_path / "run-bad.parquet").write_bytes(b"not parquet")
    assert [r.rel for r in read_rows(tmp_path)] == ["a.jpg"]
    assert "Ignoring unreadable shard" in caplog.text
