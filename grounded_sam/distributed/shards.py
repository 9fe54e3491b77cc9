"""Per-image results as Parquet shards: the schema, atomic writes, and reading them back.

A shard holds the results of one batch of images, one row per image::

    rel        string   image path relative to the job's root (names it in the dataset)
    path       string   path the worker read (on the job's filesystem)
    bytes      int64    size of the file that was labeled
    height     int32    image height in pixels (null when the image failed)
    width      int32    image width in pixels (null when the image failed)
    error      string   why the image failed; null when it was labeled
    stage      string   where it failed: "decode" (the file is not a readable image; not
                        retried while the file keeps its size) or "label"; null when labeled
    detections list<struct<id, label, class_id, confidence, clip_score, sam_iou,
                           box: list<float64> (xyxy, pixels), area,
                           mask: struct<size: list<int32>, counts: string> (COCO RLE)>>

Shards are named ``<run id>-<random>.parquet`` (unique per run and per batch, so two runs
never write the same file), written to a hidden temporary name in the same folder and
renamed when complete: a reader lists only complete shards, even after a worker or the
driver was killed mid-write.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "SHARD_SUFFIX",
    "ShardRow",
    "list_shards",
    "read_rows",
    "row_from_records",
    "shard_schema",
    "write_shard",
]

logger = logging.getLogger(__name__)

SHARD_SUFFIX = ".parquet"


def shard_schema() -> Any:
    """The ``pyarrow.Schema`` of a shard (see the module docstring)."""
    import pyarrow as pa

    mask = pa.struct([("size", pa.list_(pa.int32())), ("counts", pa.string())])
    detection = pa.struct(
        [
            ("id", pa.int32()),
            ("label", pa.string()),
            ("class_id", pa.int32()),
            ("confidence", pa.float64()),
            ("clip_score", pa.float64()),
            ("sam_iou", pa.float64()),
            ("box", pa.list_(pa.float64())),
            ("area", pa.int64()),
            ("mask", mask),
        ]
    )
    return pa.schema(
        [
            ("rel", pa.string()),
            ("path", pa.string()),
            ("bytes", pa.int64()),
            ("height", pa.int32()),
            ("width", pa.int32()),
            ("error", pa.string()),
            ("stage", pa.string()),
            ("detections", pa.list_(detection)),
        ]
    )


@dataclass
class ShardRow:
    """One image's row (see the module docstring)."""

    rel: str
    path: str
    bytes: int
    height: int | None
    width: int | None
    error: str | None
    detections: list[dict[str, Any]]
    stage: str | None = None

    def records(self) -> list[dict[str, Any]]:
        """The detections as the instance records of :mod:`grounded_sam.export.records`."""
        out = []
        for det in self.detections:
            rec = dict(det)
            mask = rec.get("mask")
            rec["mask"] = (
                None if mask is None else {"size": list(mask["size"]), "counts": mask["counts"]}
            )
            rec["box"] = list(rec["box"])
            out.append(rec)
        return out


def row_from_records(
    rel: str,
    path: str,
    size: int,
    image_size: tuple[int, int] | None,
    records: Sequence[Mapping[str, Any]] = (),
    error: str | None = None,
    stage: str | None = None,
) -> dict[str, Any]:
    """A shard row (a dict in the shard schema) for a labeled or a failed image."""
    detections = []
    for rec in records:
        det = {k: rec[k] for k in ("id", "label", "class_id", "confidence", "clip_score",
                                   "sam_iou", "box", "area")}  # fmt: skip
        mask = rec.get("mask")
        counts = None if mask is None else mask["counts"]
        if isinstance(counts, bytes):
            counts = counts.decode("ascii")
        det["mask"] = None if mask is None else {"size": list(mask["size"]), "counts": counts}
        detections.append(det)
    return {
        "rel": rel,
        "path": path,
        "bytes": int(size),
        "height": None if image_size is None else int(image_size[0]),
        "width": None if image_size is None else int(image_size[1]),
        "error": error,
        "stage": stage if error is not None else None,
        "detections": detections,
    }


def write_shard(folder: str | os.PathLike, run_id: str, rows: Sequence[Mapping[str, Any]]) -> Path:
    """Write rows as a new shard, atomically (temporary file, then rename).

    Args:
        folder: Shard folder (created if missing); must be reachable by every worker.
        run_id: Id of the driver run; part of the file name.
        rows: Rows from :func:`row_from_records`.

    Returns:
        The shard's path, ``<run_id>-<random hex>.parquet``.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{run_id}-{uuid.uuid4().hex}{SHARD_SUFFIX}"
    table = pa.Table.from_pylist(list(rows), schema=shard_schema())
    tmp = folder / f".{name}.tmp"
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, folder / name)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return folder / name


def list_shards(folder: str | os.PathLike) -> list[Path]:
    """The complete shards in ``folder`` (temporary files of unfinished writes are ignored)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(
        p for p in folder.iterdir()
        if p.suffix == SHARD_SUFFIX and not p.name.startswith(".") and p.is_file()
    )  # fmt: skip


def read_rows(
    folder: str | os.PathLike, columns: Sequence[str] | None = None
) -> Iterator[ShardRow]:
    """Rows of every complete shard in ``folder``, shard by shard.

    Args:
        folder: The shard folder.
        columns: Read only these columns (the others are left empty), e.g.
            ``("rel", "bytes", "error")`` to see what is done without reading masks.

    Yields:
        One :class:`ShardRow` per image row. A shard that cannot be read is logged and
        skipped (its images are labeled again).
    """
    import pyarrow.parquet as pq

    for shard in list_shards(folder):
        try:
            table = pq.read_table(shard, columns=list(columns) if columns else None)
        except (OSError, ValueError) as exc:
            logger.warning("Ignoring unreadable shard %s (%s); its images are labeled again",
                           shard, exc)  # fmt: skip
            continue
        for row in table.to_pylist():
            yield ShardRow(
                rel=row["rel"],
                path=row.get("path") or "",
                bytes=int(row.get("bytes") or 0),
                height=row.get("height"),
                width=row.get("width"),
                error=row.get("error"),
                detections=row.get("detections") or [],
                stage=row.get("stage"),
            )
