"""A labeling run's resume state in ``DATASET_DIR/.grounded_sam_state``.

* ``run.json``: ``{"schema": 1, "config": <labeling_config>}``, the settings of the run; a
  later run resumes only with the same settings (:func:`begin_run`).
* ``images/<relative path>.json``: one labeled image (its instance records, masks as COCO
  RLE, and the size and mtime of its source file), written atomically as soon as the image
  is done (:func:`save_result`), reused while the source file is unchanged
  (:func:`load_result`).

Every way of labeling (one machine, a Ray cluster) goes through these functions, so their
saved runs are interchangeable. The folder is locked while a run writes it
(:mod:`grounded_sam.labeling.lock`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grounded_sam.export.files import atomic_write_json

__all__ = [
    "STATE_DIRNAME",
    "LabeledImage",
    "begin_run",
    "load_result",
    "read_run_config",
    "run_file",
    "save_result",
    "saved_results",
    "source_stamp",
    "state_dir",
]

logger = logging.getLogger(__name__)

STATE_DIRNAME = ".grounded_sam_state"
"""Folder inside DATASET_DIR that holds the resume state."""

SCHEMA = 1
"""Version of ``run.json`` and of the per-image files."""


@dataclass
class LabeledImage:
    """One labeled image, as saved and exported (the same for every way of labeling).

    Attributes:
        rel: Posix path relative to the images folder (names its file in the dataset).
        source: Local file copied into ``images/`` (for a saved result re-exported without
            its source, the state file).
        height: Image height in pixels.
        width: Image width in pixels.
        records: Instance records
            (:func:`grounded_sam.export.records.detections_to_records`; boxes xyxy in
            pixels, masks as COCO RLE).
        stamp: The source's :func:`source_stamp` from before it was read, saved with the
            result (None: taken when it is saved).
    """

    rel: str
    source: Path
    height: int
    width: int
    records: list[dict[str, Any]]
    stamp: dict[str, int] | None = None


def state_dir(out_dir: str | os.PathLike) -> Path:
    """``out_dir/.grounded_sam_state``."""
    return Path(out_dir) / STATE_DIRNAME


def run_file(out_dir: str | os.PathLike) -> Path:
    """``out_dir/.grounded_sam_state/run.json``."""
    return state_dir(out_dir) / "run.json"


def _result_path(out_dir: Path, rel: str) -> Path:
    return state_dir(out_dir) / "images" / f"{rel}.json"


def begin_run(out_dir: str | os.PathLike, config: Mapping[str, Any], restart: bool) -> None:
    """Record a run's config in ``out_dir`` (checking it against a run to resume).

    Used by every way of labeling (one machine or a Ray cluster) before any image is labeled.

    Args:
        out_dir: DATASET_DIR.
        config: The run's :func:`grounded_sam.labeling.config.labeling_config`.
        restart: Discard the saved state first.

    Raises:
        ValueError: ``out_dir`` holds a run with other settings and ``restart`` is False
            (the message names the settings that differ).
    """
    out, config = Path(out_dir), dict(config)
    path = run_file(out)
    if restart and state_dir(out).exists():
        logger.info("Discarding the saved progress in %s", state_dir(out))
        shutil.rmtree(state_dir(out))
    if path.exists():
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            saved = None
        if saved is not None and saved.get("config") != config:
            old = saved.get("config") or {}
            keys = sorted(k for k in set(old) | set(config) if old.get(k) != config.get(k))
            raise ValueError(
                f"{out} holds a labeling run with different settings ({', '.join(keys)} "
                "differ): repeat the same options to resume it, add --restart to start over, "
                "or choose another output folder."
            )
    atomic_write_json(path, {"schema": SCHEMA, "config": config}, indent=1)


def read_run_config(out_dir: str | os.PathLike) -> dict[str, Any]:
    """The config saved by :func:`begin_run`.

    Raises:
        FileNotFoundError: ``out_dir`` holds no labeling run.
    """
    path = run_file(out_dir)
    if not path.is_file():
        raise FileNotFoundError(f"No labeling run found in {out_dir} (missing {path}).")
    return json.loads(path.read_text(encoding="utf-8"))["config"]


def source_stamp(path: Path) -> dict[str, int]:
    """What identifies a source file's version: ``{"bytes": size, "mtime_ns": mtime}``.

    Raises:
        OSError: The file cannot be looked up.
    """
    st = path.stat()
    return {"bytes": st.st_size, "mtime_ns": st.st_mtime_ns}


def load_result(out_dir: str | os.PathLike, rel: str, source: Path) -> LabeledImage | None:
    """The saved result of the image at ``rel``, if it is still that of ``source``.

    Returns:
        The result, or None when there is none, it is unreadable (logged) or the source
        file's size or mtime changed since.
    """
    path = _result_path(Path(out_dir), rel)
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
        if state.get("schema") != SCHEMA or state.get("source") != source_stamp(source):
            return None
        return LabeledImage(
            rel, source, int(state["height"]), int(state["width"]), state["instances"]
        )
    except (OSError, ValueError, KeyError, TypeError):
        logger.warning("Ignoring unreadable saved result %s; labeling %s again", path, rel)
        return None


def save_result(out_dir: str | os.PathLike, entry: LabeledImage) -> None:
    """Save one image's result atomically (stamped with its source file's size and mtime).

    The stamp is ``entry.stamp`` when set (taken before the file was read, so that a file
    replaced while it was labeled counts as changed and a later run labels it again), else
    the file's :func:`source_stamp` now.
    """
    atomic_write_json(
        _result_path(Path(out_dir), entry.rel),
        {
            "schema": SCHEMA,
            "image": entry.rel,
            "height": entry.height,
            "width": entry.width,
            "source": source_stamp(entry.source) if entry.stamp is None else entry.stamp,
            "instances": entry.records,
        },
    )


def saved_results(out_dir: str | os.PathLike) -> Iterator[LabeledImage]:
    """Every saved result (any order); ``source`` is the state file itself."""
    for path in (state_dir(out_dir) / "images").rglob("*.json"):
        state = json.loads(path.read_text(encoding="utf-8"))
        yield LabeledImage(
            state["image"], path, state["height"], state["width"], state["instances"]
        )
