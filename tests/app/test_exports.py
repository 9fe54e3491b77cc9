"""Downloadable files of the current result, in the session's own folder."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from grounded_sam.app import callbacks as cb

# -- exports -------------------------------------------------------------------------------------


def test_exports(indexed: cb.Session, tiny_gs) -> None:
    assert cb.export_files(indexed, tiny_gs) is None  # nothing to export yet
    cb.text_query(indexed, tiny_gs, "dog, person", 0.0, "medium", 20)
    dets = indexed.result.dets
    h, w = indexed.image.shape[:2]
    files = cb.export_files(indexed, tiny_gs, 0.4)
    stem = Path(indexed.name).stem
    assert files.json.name == f"{stem}.json"
    assert files.masks_zip.name == f"{stem}_masks.zip"
    assert files.overlay_png.name == f"{stem}_overlay.png"
    assert files.json.parent == indexed.workdir

    doc = json.loads(files.json.read_text())
    assert doc["width"] == w and doc["height"] == h and doc["image"] == indexed.name
    assert doc["prompt"] == "dog, person" and doc["phrases"] == ["dog", "person"]
    assert doc["models"] == {"sam": tiny_gs.model_ids[0], "clip": tiny_gs.model_ids[1]}
    assert doc["num_instances"] == len(dets) == len(doc["instances"])
    rec = doc["instances"][0]
    assert {"label", "confidence", "clip_score", "sam_iou", "box", "area", "mask"} <= set(rec)

    with zipfile.ZipFile(files.masks_zip) as zf:
        names = zf.namelist()
        assert len(names) == len(dets) and all(n.endswith(".png") for n in names)
        with zf.open(names[0]) as fh:
            mask = np.asarray(Image.open(fh))
    assert mask.shape == (h, w) and set(np.unique(mask)) <= {0, 255}
    assert np.array_equal(mask == 255, dets.mask[0])

    overlay = np.asarray(Image.open(files.overlay_png).convert("RGB"))
    assert np.array_equal(overlay, cb.render(indexed, 0.4))

    # Same result and settings: the files are reused; a new opacity rewrites the overlay.
    assert cb.export_files(indexed, tiny_gs, 0.4) == files
    cb.export_files(indexed, tiny_gs, 0.9)
    assert not np.array_equal(np.asarray(Image.open(files.overlay_png).convert("RGB")), overlay)


def test_exports_of_an_empty_result_and_of_a_prompt(indexed: cb.Session, tiny_gs) -> None:
    cb.text_query(indexed, tiny_gs, "zebra", 1.0)
    files = cb.export_files(indexed, tiny_gs)
    assert json.loads(files.json.read_text())["num_instances"] == 0
    assert zipfile.ZipFile(files.masks_zip).namelist() == []
    cb.click(indexed, tiny_gs, 20, 20, "Foreground point")
    doc = json.loads(cb.export_files(indexed, tiny_gs).json.read_text())
    assert doc["phrases"] == ["prompt"] and doc["prompt"] is None
    assert doc["instances"][0]["clip_score"] is None


def test_session_close_removes_its_files(indexed: cb.Session, tiny_gs) -> None:
    cb.text_query(indexed, tiny_gs, "dog", 0.0)
    files = cb.export_files(indexed, tiny_gs)
    folder = files.json.parent
    assert folder.is_dir()
    indexed.close()
    assert not folder.exists() and indexed.workdir is None
