"""The current result as downloadable files: instance masks (zip), the overlay, the JSON."""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

from grounded_sam.app.render import render
from grounded_sam.app.session import ExportFiles, Session
from grounded_sam.export.files import atomic_write, atomic_write_json, atomic_write_png, safe_name
from grounded_sam.export.records import detections_to_json, save_instance_masks

if TYPE_CHECKING:
    from grounded_sam.pipeline import GroundedSAM

__all__ = ["export_files"]


def export_files(session: Session, gs: GroundedSAM, opacity: float = 0.5) -> ExportFiles | None:
    """Write the current result's exports into the session's private temp folder.

    Files: ``<stem>_masks.zip`` (one binary PNG per instance, 255 inside),
    ``<stem>_overlay.png`` (what the page shows) and ``<stem>.json`` (the CLI's schema, see
    :mod:`grounded_sam.export.records`).

    Args:
        session: The tab's session.
        gs: The engine (for the model names in the JSON).
        opacity: Mask opacity of the overlay PNG.

    Returns:
        The three paths, or None when there is no result.
    """
    result = session.result
    if result is None:
        return None
    key = (round(float(opacity), 4), tuple(session.points), session.box_start, session.box)
    cached = session.exported
    if (
        cached is not None
        and cached[0] is result
        and cached[1] == key
        and all(p.is_file() for p in (cached[2].masks_zip, cached[2].overlay_png, cached[2].json))
    ):
        return cached[2]
    stem = safe_name(Path(session.name).stem or "image")
    out = session.export_dir()
    overlay = render(session, opacity)
    if overlay is None:
        return None
    png = atomic_write_png(out / f"{stem}_overlay.png", overlay)
    h, w = result.image.shape[:2]
    doc = detections_to_json(
        result.dets,
        (h, w),
        image_path=session.name,
        prompt=result.prompt if result.kind == "text" else None,
        phrases=result.phrases,
        models={"sam": gs.model_ids[0], "clip": gs.model_ids[1]},
    )
    js = atomic_write_json(out / f"{stem}.json", doc, indent=2)
    mask_dir = Path(tempfile.mkdtemp(prefix="masks_", dir=out))
    try:
        written = save_instance_masks(result.dets, mask_dir, stem)

        def _zip(tmp: Path) -> None:
            with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
                for p in written:
                    zf.write(p, arcname=p.name)

        zp = atomic_write(out / f"{stem}_masks.zip", _zip)
    finally:
        shutil.rmtree(mask_dir, ignore_errors=True)
    files = ExportFiles(masks_zip=zp, overlay_png=png, json=js)
    session.exported = (result, key, files)
    return files
