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


def test_session_export_folders_stay_bounded(tiny_gs, tmp_path: Path) -> None:
    # The app never deleted its per-session export folders (274 left after ~310 sessions):
    # gradio does not always drop a closed tab's state. Every export now sweeps the root.
    import os
    import time

    from grounded_sam.app.exports import ExportFolders
    from tests.app.conftest import synthetic_result

    folders = ExportFolders(tmp_path / "exports", max_age_s=3600, max_folders=5)
    sessions = []
    for i in range(40):  # 40 tabs opened and never closed
        session = cb.Session(name=f"tab{i}.png")
        synthetic_result(session)
        files = cb.export_files(session, tiny_gs, 0.5, folders=folders)
        assert files.json.is_file() and files.json.parent.parent == folders.root
        sessions.append(session)
    left = sorted(p for p in folders.root.iterdir())
    assert len(left) == 5
    assert {s.workdir for s in sessions[-5:]} == set(left)  # the most recent ones

    # A folder unused for longer than max_age_s goes at the next export, even under the bound.
    old = sessions[-1].workdir
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    again = cb.Session(name="again.png")
    synthetic_result(again)
    cb.export_files(again, tiny_gs, 0.5, folders=folders)
    assert not old.exists() and again.workdir.is_dir()
    # A session whose folder was swept writes its files again when asked.
    files = cb.export_files(sessions[0], tiny_gs, 0.5, folders=folders)
    assert files.json.is_file() and files.masks_zip.is_file()
    folders.close()
    assert (tmp_path / "exports" / files.json.parent.name).is_dir()  # a given root stays...
    own = ExportFolders()
    root = own.root
    own.close()
    assert not root.exists()  # ...one it made is
