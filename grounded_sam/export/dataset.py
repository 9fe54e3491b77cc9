"""Open-vocabulary labeling of an image folder into a COCO, YOLO or Pascal VOC dataset.

Every image is indexed once and all classes are answered from that one index. The result of
each image is persisted atomically under ``DATASET_DIR/.grounded_sam_state/<relative
path>.json`` (the instance records of :mod:`grounded_sam.export.records`, masks as COCO
RLE) as soon as it is computed, so an interrupted run (Ctrl-C, a killed process) continues
where it stopped when started again, and the export, built only from those files at the
end, is the same as that of an uninterrupted run.

Layout of ``DATASET_DIR``::

    images/                  the labeled images (copied; nested paths flattened with "__")
    annotations.json         COCO: RLE masks, iscrowd 0, a "score" (confidence) per annotation
    labels/*.txt, data.yaml  YOLO segmentation polygons (one line per detection)
    scores/*.txt             YOLO sidecar: the confidence of each label line, same order
    annotations/*.xml        Pascal VOC
    .grounded_sam_state/     resume state (run.json + one JSON per image)
    .grounded_sam.lock       held (OS lock) while a run labels or exports into the folder

Only one run at a time may write a DATASET_DIR: a second ``label`` / ``export_dataset`` on the
same folder fails at once with :class:`grounded_sam.export.lock.DatasetBusyError` (or waits
``lock_wait`` seconds), so exports never interleave.

The formats are written by supervision's ``DetectionDataset`` (``as_coco``, ``as_yolo``,
``as_pascal_voc``); every file is written to a temporary name first and then renamed. For
YOLO and VOC, a mask in several parts is first joined into one piece
(:mod:`grounded_sam.export.single_part`), so each detection is one polygon, one instance.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import supervision as sv
from tqdm import tqdm

from grounded_sam.batch import iter_results
from grounded_sam.export.files import (
    atomic_copy,
    atomic_write_json,
    atomic_write_text,
    flat_names,
)
from grounded_sam.export.lock import dataset_lock
from grounded_sam.export.records import detections_to_records, records_to_detections
from grounded_sam.export.single_part import join_parts_of_masks
from grounded_sam.grounding.candidates import parse_negatives
from grounded_sam.grounding.scoring import check_calibration
from grounded_sam.inputs import IMAGE_EXTENSIONS, find_images, parse_prompt

if TYPE_CHECKING:
    from grounded_sam.pipeline import GroundedSAM
    from grounded_sam.sam.everything import EverythingSettings

__all__ = [
    "FORMATS",
    "IMAGE_EXTENSIONS",
    "STATE_DIRNAME",
    "LabelReport",
    "LabeledImage",
    "begin_run",
    "export_dataset",
    "export_labeled",
    "find_images",
    "label_folder",
    "label_image",
    "label_images",
    "labeling_config",
    "prepare_labeling",
]

logger = logging.getLogger(__name__)

STATE_DIRNAME = ".grounded_sam_state"
"""Folder inside DATASET_DIR that holds the resume state."""

FORMATS = ("coco", "yolo", "voc")
"""Dataset formats :func:`export_dataset` writes."""

_SCHEMA = 1
_CHUNK = 64  # images per DetectionDataset during export (bounds the masks held in memory)
_IMAGE_FAILURES = (ValueError, OSError, TypeError, RuntimeError, MemoryError)


@dataclass
class LabelReport:
    """What a labeling run did.

    Attributes:
        total: Images found.
        reused: Images whose result was already saved by an earlier (interrupted) run.
        labeled: Images labeled by this run.
        failed: ``(relative path, reason)`` of every image that could not be labeled.
        instances: Instances per class over all exported images.
        exported: Files of the dataset export (annotation files, not the images).
    """

    total: int = 0
    reused: int = 0
    labeled: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    instances: Counter = field(default_factory=Counter)
    exported: list[Path] = field(default_factory=list)


@dataclass
class _Entry:
    """One labeled image, as saved and exported (the same for every way of labeling)."""

    rel: str  # posix path relative to the images folder
    source: Path
    height: int
    width: int
    records: list[dict[str, Any]]


LabeledImage = _Entry
"""Public name of one image's result: ``rel`` (posix path relative to the source root, which
names its file in the dataset), ``source`` (local file copied into ``images/``), ``height``,
``width`` and ``records`` (:func:`grounded_sam.export.records.detections_to_records`)."""


# -- scanning and validation --------------------------------------------------------------


def prepare_labeling(images_dir: str | os.PathLike, out_dir: str | os.PathLike) -> list[Path]:
    """Check a labeling job's folders and list its images, before any model is loaded.

    Args:
        images_dir: Folder of images (scanned recursively).
        out_dir: DATASET_DIR; may exist (to resume) but must not be a file, the images
            folder itself, or a folder that contains the images folder.

    Returns:
        The images to label (see :func:`find_images`); ``out_dir`` is excluded from the scan.

    Raises:
        FileNotFoundError: ``images_dir`` does not exist.
        ValueError: ``images_dir`` is not a folder or holds no images, or ``out_dir`` is
            not usable.
    """
    src = Path(images_dir)
    out = Path(out_dir)
    if not src.exists():
        raise FileNotFoundError(f"Images folder not found: {src}")
    if not src.is_dir():
        raise ValueError(f"{src} is not a folder: give the folder that holds the images.")
    if out.exists() and not out.is_dir():
        raise ValueError(f"Output path {out} is a file: give a folder for the dataset.")
    src_r, out_r = src.resolve(), out.resolve()
    if out_r == src_r or out_r in src_r.parents:
        raise ValueError(
            f"The output folder {out} contains the images folder {src}: choose a separate "
            "output folder for the dataset."
        )
    images = find_images(src, exclude=[out_r])
    if not images:
        raise ValueError(
            f"No images found in {src} (looked for {', '.join(IMAGE_EXTENSIONS)} in any "
            "case, in all subfolders)."
        )
    return images


# -- state -----------------------------------------------------------------------------


def _state_dir(out_dir: Path) -> Path:
    return out_dir / STATE_DIRNAME


def _state_path(out_dir: Path, rel: str) -> Path:
    return _state_dir(out_dir) / "images" / f"{rel}.json"


def labeling_config(
    classes: Sequence[str],
    *,
    sam: str,
    clip: str,
    proposal_settings: EverythingSettings,
    crop_style: str | None = "masked",
    max_regions: int = 100,
    threshold: float = 0.3,
    top_k: int | None = 20,
    refine: int = 1,
    min_region_area: int = 0,
    negative: str | Sequence[str] | None = None,
    calibration: str = "joint",
    keep_parts: bool = False,
) -> dict[str, Any]:
    """Everything that changes a labeling result; saved results are reused only if it matches.

    Args:
        classes: Parsed class names.
        sam: SAM model spec as given to ``GroundedSAM.from_pretrained``.
        clip: CLIP model spec.
        proposal_settings: Proposal settings of the engine's index.
        crop_style: CLIP crop style.
        max_regions: Engine's ``max_regions``.
        threshold: Minimum confidence.
        top_k: Maximum detections per class (None: no limit).
        refine: Refinement passes.
        min_region_area: Small-region cleanup of the final masks.
        negative: Negative phrases (regions that best match one are never labeled).
        calibration: ``"joint"`` or ``"per_phrase"`` (see ``GroundedSAM.query``).
        keep_parts: Keep parts of a larger same-class mask as their own instances.

    Returns:
        A JSON-ready dict (stored in ``.grounded_sam_state/run.json``).

    Raises:
        ValueError: An unknown ``calibration``, or a class that is also a negative phrase.
    """
    # Grounding options are stored only when not at their defaults, so that runs saved
    # before they existed still resume.
    extra: dict[str, Any] = {}
    check_calibration(calibration)
    negatives = parse_negatives(negative, list(classes))
    if negatives:
        extra["negative"] = negatives
    if calibration != "joint":
        extra["calibration"] = calibration
    if keep_parts:
        extra["keep_parts"] = True
    return json.loads(
        json.dumps(
            {
                **extra,
                "classes": list(classes),
                "sam": os.fspath(sam),
                "clip": clip,
                "crop_style": crop_style,
                "proposals": asdict(proposal_settings),
                "max_regions": max_regions,
                "threshold": threshold,
                "top_k": top_k,
                "refine": refine,
                "min_region_area": min_region_area,
            }
        )
    )


def _engine_config(gs: GroundedSAM, classes: list[str], query: Mapping[str, Any]) -> dict[str, Any]:
    top_k = query.get("top_k", "default")
    return labeling_config(
        classes,
        sam=gs.model_ids[0],
        clip=gs.model_ids[1],
        proposal_settings=gs.proposal_settings,
        crop_style=getattr(gs.scorer, "crop_style", None),
        max_regions=gs.max_regions,
        threshold=gs.threshold if query.get("threshold") is None else query["threshold"],
        top_k=gs.top_k if top_k == "default" else top_k,
        refine=gs.refine if query.get("refine") is None else query["refine"],
        min_region_area=query.get("min_region_area", 0),
        negative=query.get("negative"),
        calibration=query.get("calibration", "joint"),
        keep_parts=query.get("keep_parts", False),
    )


def begin_run(out_dir: str | os.PathLike, config: Mapping[str, Any], restart: bool) -> None:
    """Record a run's config in ``out_dir`` (checking it against a run to resume).

    Used by every way of labeling (one machine or a Ray cluster) before any image is labeled.

    Raises:
        ValueError: ``out_dir`` holds a run with other settings and ``restart`` is False.
    """
    _check_run_config(Path(out_dir), dict(config), restart)


def _check_run_config(out_dir: Path, config: dict[str, Any], restart: bool) -> None:
    run_file = _state_dir(out_dir) / "run.json"
    if restart and _state_dir(out_dir).exists():
        logger.info("Discarding the saved progress in %s", _state_dir(out_dir))
        shutil.rmtree(_state_dir(out_dir))
    if run_file.exists():
        try:
            saved = json.loads(run_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            saved = None
        if saved is not None and saved.get("config") != config:
            old = saved.get("config") or {}
            keys = sorted(k for k in set(old) | set(config) if old.get(k) != config.get(k))
            raise ValueError(
                f"{out_dir} holds a labeling run with different settings ({', '.join(keys)} "
                "differ): repeat the same options to resume it, add --restart to start over, "
                "or choose another output folder."
            )
    atomic_write_json(run_file, {"schema": _SCHEMA, "config": config}, indent=1)


def _source_stamp(path: Path) -> dict[str, int]:
    st = path.stat()
    return {"bytes": st.st_size, "mtime_ns": st.st_mtime_ns}


def _load_state(out_dir: Path, rel: str, source: Path) -> _Entry | None:
    path = _state_path(out_dir, rel)
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
        if state.get("schema") != _SCHEMA or state.get("source") != _source_stamp(source):
            return None
        return _Entry(rel, source, int(state["height"]), int(state["width"]), state["instances"])
    except (OSError, ValueError, KeyError, TypeError):
        logger.warning("Ignoring unreadable saved result %s; labeling %s again", path, rel)
        return None


def _save_state(out_dir: Path, entry: _Entry) -> None:
    atomic_write_json(
        _state_path(out_dir, entry.rel),
        {
            "schema": _SCHEMA,
            "image": entry.rel,
            "height": entry.height,
            "width": entry.width,
            "source": _source_stamp(entry.source),
            "instances": entry.records,
        },
    )


# -- labeling --------------------------------------------------------------------------


def label_image(
    gs: GroundedSAM,
    image: np.ndarray,
    classes: Sequence[str],
    *,
    threshold: float | None = None,
    top_k: int | None | str = "default",
    refine: int | None = None,
    min_region_area: int = 0,
    negative: str | Sequence[str] | None = None,
    calibration: str = "joint",
    keep_parts: bool = False,
    embedding: Any = None,
) -> list[dict[str, Any]]:
    """Label one image: index it once, answer all classes from that index.

    The per-image step of every way of labeling (:func:`label_images` on one machine and
    :mod:`grounded_sam.distributed` on a Ray cluster), so their datasets cannot differ.

    Args:
        gs: The engine.
        image: (H, W, 3) uint8 RGB.
        classes: Parsed class names (one category each).
        threshold: Minimum confidence (None: the engine's).
        top_k: Maximum instances per class (None: no limit; "default": the engine's).
        refine: Mask refinement passes (None: the engine's).
        min_region_area: Remove mask islands/holes smaller than this many pixels.
        negative: Negative phrases (a region that best matches one is never labeled).
        calibration: ``"joint"`` or ``"per_phrase"`` (see ``GroundedSAM.query``).
        keep_parts: Keep parts of a larger same-class mask as their own instances.
        embedding: The image's SAM embedding when the many-images loop already encoded it
            in a batch (None: encode here).

    Returns:
        The instance records (:func:`~grounded_sam.export.records.detections_to_records`),
        masks as COCO RLE.
    """
    index = gs.index(image) if embedding is None else gs.index(image, embedding=embedding)
    dets = gs.query(
        index,
        list(classes),
        threshold=threshold,
        top_k=top_k,
        refine=refine,
        min_region_area=min_region_area,
        negative=negative,
        calibration=calibration,
        keep_parts=keep_parts,
    )
    return detections_to_records(dets, image.shape[:2])


def label_images(
    engine: GroundedSAM | Callable[[], GroundedSAM],
    images_dir: str | os.PathLike,
    images: Sequence[str | os.PathLike],
    classes: str | Sequence[str],
    out_dir: str | os.PathLike,
    fmt: str = "coco",
    *,
    threshold: float | None = None,
    top_k: int | None | str = "default",
    refine: int | None = None,
    min_region_area: int = 0,
    negative: str | Sequence[str] | None = None,
    calibration: str = "joint",
    keep_parts: bool = False,
    config: Mapping[str, Any] | None = None,
    restart: bool = False,
    progress: bool = True,
    on_failure: Callable[[str, str], None] | None = None,
    lock_wait: float = 0.0,
) -> LabelReport:
    """Label images (resumably) and export the dataset.

    Args:
        engine: The engine, or a function that loads it: it is then called only if some
            image still needs labeling (a finished run re-exports without loading models).
        images_dir: Folder the images are under (their relative paths name the state files).
        images: Image paths under ``images_dir`` (from :func:`prepare_labeling`).
        classes: Class names, comma-separated or a list; each becomes one category.
        out_dir: DATASET_DIR.
        fmt: ``"coco"``, ``"yolo"`` or ``"voc"``.
        threshold: Minimum confidence (default: the engine's).
        top_k: Maximum instances per class and image (None: no limit; default: the
            engine's).
        refine: Mask refinement passes (default: the engine's).
        min_region_area: Remove mask islands/holes smaller than this many pixels.
        negative: Negative phrases, e.g. ``"handle, saucer"``: a region whose best match is
            one of them is never labeled.
        calibration: ``"joint"`` or ``"per_phrase"`` (see ``GroundedSAM.query``).
        keep_parts: Keep parts of a larger same-class mask as their own instances.
        config: The run's :func:`labeling_config`; required when ``engine`` is a loader,
            derived from the engine otherwise.
        restart: Discard saved progress in ``out_dir`` and label every image again.
        progress: Show a progress bar (stderr) with counts and ETA.
        on_failure: Called with ``(relative path, reason)`` when an image fails; the run
            goes on. Default: log a warning.
        lock_wait: Seconds to wait when another run holds ``out_dir`` (0: fail at once).

    Returns:
        A :class:`LabelReport`; ``failed`` is non-empty when some images were skipped.

    Raises:
        ValueError: Unknown format, empty class list, or ``out_dir`` holds a run with other
            settings (and ``restart`` is False).
        grounded_sam.export.lock.DatasetBusyError: Another run holds ``out_dir``.
    """
    if fmt not in FORMATS:
        raise ValueError(f"Unknown format {fmt!r}: use one of {', '.join(FORMATS)}.")
    # bad options fail once, before the lock, the models or any image
    check_calibration(calibration)
    parse_negatives(negative, parse_prompt(classes))
    with dataset_lock(out_dir, wait=lock_wait):
        return _label_images(
            engine, images_dir, images, classes, out_dir, fmt,
            threshold=threshold, top_k=top_k, refine=refine, min_region_area=min_region_area,
            negative=negative, calibration=calibration, keep_parts=keep_parts,
            config=config, restart=restart, progress=progress, on_failure=on_failure,
        )  # fmt: skip


def _label_images(
    engine: GroundedSAM | Callable[[], GroundedSAM],
    images_dir: str | os.PathLike,
    images: Sequence[str | os.PathLike],
    classes: str | Sequence[str],
    out_dir: str | os.PathLike,
    fmt: str,
    *,
    threshold: float | None,
    top_k: int | None | str,
    refine: int | None,
    min_region_area: int,
    negative: str | Sequence[str] | None,
    calibration: str,
    keep_parts: bool,
    config: Mapping[str, Any] | None,
    restart: bool,
    progress: bool,
    on_failure: Callable[[str, str], None] | None,
) -> LabelReport:
    class_list = parse_prompt(classes)
    root, out = Path(images_dir), Path(out_dir)
    query = {
        "threshold": threshold,
        "top_k": top_k,
        "refine": refine,
        "min_region_area": min_region_area,
        "negative": negative,
        "calibration": calibration,
        "keep_parts": keep_parts,
    }
    gs: GroundedSAM | None = engine if hasattr(engine, "index") else None  # type: ignore[assignment]
    if config is None:
        if gs is None:
            raise TypeError("label_images needs config= when engine is a loader function.")
        config = _engine_config(gs, class_list, query)
    config = dict(config)
    out.mkdir(parents=True, exist_ok=True)
    _check_run_config(out, config, restart)

    report = LabelReport(total=len(images))
    entries: list[_Entry] = []
    todo: list[tuple[str, Path]] = []
    for path in map(Path, images):
        rel = path.relative_to(root).as_posix()
        entry = _load_state(out, rel, path) if path.exists() else None
        if entry is None:
            todo.append((rel, path))
        else:
            entries.append(entry)
    report.reused = len(entries)
    if report.reused:
        logger.info("Resuming: %d of %d images already labeled", report.reused, len(images))

    def fail(rel: str, reason: str) -> None:
        report.failed.append((rel, reason))
        if on_failure is not None:
            on_failure(rel, reason)
        else:
            logger.warning("Skipped %s: %s", rel, reason)

    # The bar starts once the models are ready, so that a model that cannot be loaded
    # leaves nothing but its error message. Images go through the shared many-images loop
    # (decoding overlapped with model work, batched encoder on CUDA).
    bar: tqdm | None = None
    try:
        if todo and gs is None:  # some image needs work: load the models now
            gs = engine()  # type: ignore[operator]

        def work(image: np.ndarray, embedding: Any) -> list[dict[str, Any]]:
            return label_image(gs, image, class_list, embedding=embedding, **query)

        items = iter_results(gs, [p for _, p in todo], work, show_progress=False
                             ) if todo else iter(())  # fmt: skip
        for (rel, path), item in zip(todo, items, strict=True):
            if bar is None:
                bar = tqdm(
                    total=len(images),
                    initial=report.reused,
                    unit="img",
                    desc="Labeling",
                    disable=not progress,
                    dynamic_ncols=True,
                )
            bar.set_postfix_str(rel[-40:], refresh=False)
            try:
                if not item.ok:
                    raise item.result
                image, records = item.image, item.result
            except _IMAGE_FAILURES as exc:
                fail(rel, _one_line(exc))
            else:
                entry = _Entry(rel, path, image.shape[0], image.shape[1], records)
                _save_state(out, entry)
                entries.append(entry)
                report.labeled += 1
            bar.update(1)
    finally:
        if bar is not None:
            bar.close()

    report.exported, report.instances = export_labeled(out, entries, class_list, fmt, config)
    return report


def export_labeled(
    out_dir: str | os.PathLike,
    entries: Sequence[LabeledImage],
    classes: Sequence[str],
    fmt: str,
    config: Mapping[str, Any],
) -> tuple[list[Path], Counter]:
    """Write the dataset of labeled images: the final step of every way of labeling.

    Args:
        out_dir: DATASET_DIR.
        entries: The images to export (any order; exported sorted by ``rel``).
        classes: Class names, in category order.
        fmt: ``"coco"``, ``"yolo"`` or ``"voc"``.
        config: The run's :func:`labeling_config` (stored in the COCO ``info``).

    Returns:
        ``(files written, instances per class)``.
    """
    ordered = sorted(entries, key=lambda e: e.rel)
    instances: Counter = Counter()
    for entry in ordered:
        instances.update(r["label"] for r in entry.records)
    return _export(Path(out_dir), ordered, list(classes), fmt, config), instances


def label_folder(
    gs: GroundedSAM,
    images_dir: str | os.PathLike,
    classes: str | Sequence[str],
    out_dir: str | os.PathLike,
    fmt: str = "coco",
    **kwargs: Any,
) -> LabelReport:
    """Label every image under ``images_dir`` and export a dataset into ``out_dir``.

    ``prepare_labeling`` + ``label_images``; see :func:`label_images` for ``kwargs``.

    Example:
        >>> report = label_folder(gs, "fruits/images", "date, fig, hazelnut",
        ...                       "fruits-coco", fmt="coco")  # doctest: +SKIP
    """
    images = prepare_labeling(images_dir, out_dir)
    return label_images(gs, images_dir, images, classes, out_dir, fmt, **kwargs)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


# -- export ----------------------------------------------------------------------------


def export_dataset(out_dir: str | os.PathLike, fmt: str = "coco") -> list[Path]:
    """Export (again) the labels saved in ``out_dir``, e.g. in another format.

    Uses the saved per-image results only: no model is needed.

    Args:
        out_dir: DATASET_DIR of an earlier :func:`label_folder` run.
        fmt: ``"coco"``, ``"yolo"`` or ``"voc"``.

    Returns:
        The annotation files written.

    Raises:
        FileNotFoundError: ``out_dir`` holds no labeling state.
        ValueError: Unknown format.
    """
    out = Path(out_dir)
    run_file = _state_dir(out) / "run.json"
    if not run_file.is_file():
        raise FileNotFoundError(f"No labeling run found in {out} (missing {run_file}).")
    if fmt not in FORMATS:
        raise ValueError(f"Unknown format {fmt!r}: use one of {', '.join(FORMATS)}.")
    with dataset_lock(out):
        return _export_saved(out, run_file, fmt)


def _export_saved(out: Path, run_file: Path, fmt: str) -> list[Path]:
    config = json.loads(run_file.read_text(encoding="utf-8"))["config"]
    entries = []
    base = _state_dir(out) / "images"
    for path in base.rglob("*.json"):
        state = json.loads(path.read_text(encoding="utf-8"))
        entries.append(
            _Entry(state["image"], path, state["height"], state["width"], state["instances"])
        )
    entries.sort(key=lambda e: e.rel)
    return _export(out, entries, config["classes"], fmt, config, copy_images=False)


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _export(
    out: Path,
    entries: Sequence[_Entry],
    classes: list[str],
    fmt: str,
    config: Mapping[str, Any],
    copy_images: bool = True,
) -> list[Path]:
    """Write the dataset for ``entries`` (sorted by rel) in ``fmt``; returns files written."""
    images_dir = out / "images"
    names = flat_names([e.rel for e in entries])
    targets = [images_dir / n for n in names]
    if copy_images:
        images_dir.mkdir(parents=True, exist_ok=True)
        for entry, target in zip(entries, targets, strict=True):
            if not _same_file(entry.source, target):
                atomic_copy(entry.source, target)
        _prune(images_dir, {t.name for t in targets}, suffixes=None)
    staging = _state_dir(out) / f"export-{fmt}.tmp"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    try:
        if fmt == "coco":
            written = _export_coco(out, staging, entries, targets, classes, config)
        elif fmt == "yolo":
            written = _export_yolo(out, staging, entries, targets, classes)
        else:
            written = _export_voc(out, staging, entries, targets, classes)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return written


def _same_file(src: Path, dst: Path) -> bool:
    if not dst.exists():
        return False
    s, d = src.stat(), dst.stat()
    return s.st_size == d.st_size and int(s.st_mtime) == int(d.st_mtime)


def _prune(folder: Path, keep: set[str], suffixes: tuple[str, ...] | None) -> None:
    """Remove files a previous export left in ``folder`` that this export does not have."""
    if not folder.is_dir():
        return
    for path in folder.iterdir():
        if not path.is_file() or path.name in keep:
            continue
        if suffixes is None or path.suffix in suffixes:
            path.unlink()


def _dataset(
    entries: Sequence[_Entry],
    targets: Sequence[Path],
    classes: list[str],
    crowd: bool = False,
    one_part: bool = False,
) -> tuple[sv.DetectionDataset, list[sv.Detections]]:
    annotations = {}
    dets_list = []
    for entry, target in zip(entries, targets, strict=True):
        dets = records_to_detections(entry.records, (entry.height, entry.width), classes)
        if one_part:  # polygon formats: one polygon (one instance) per detection
            dets.mask = join_parts_of_masks(dets.mask)
        if crowd:
            # Makes supervision's COCO writer take its exact-RLE path (no polygon fitting).
            dets.data["iscrowd"] = np.ones(len(dets), dtype=int)
        dets_list.append(dets)
        annotations[str(target)] = dets
    ds = sv.DetectionDataset(
        classes=list(classes), images=[str(t) for t in targets], annotations=annotations
    )
    return ds, dets_list


def _export_coco(
    out: Path,
    staging: Path,
    entries: Sequence[_Entry],
    targets: Sequence[Path],
    classes: list[str],
    config: Mapping[str, Any],
) -> list[Path]:
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    categories: list[dict[str, Any]] = []
    licenses: list[dict[str, Any]] = []
    next_image, next_ann = 1, 1
    pairs = list(zip(entries, targets, strict=True))
    for i, chunk in enumerate(_chunks(pairs, _CHUNK)):
        chunk_entries = [e for e, _ in chunk]
        ds, _ = _dataset(chunk_entries, [t for _, t in chunk], classes, crowd=True)
        part = staging / f"part{i}.json"
        next_image, next_ann = ds.as_coco(
            annotations_path=str(part),
            starting_image_id=next_image,
            starting_annotation_id=next_ann,
        )
        doc = json.loads(part.read_text(encoding="utf-8"))
        records = [r for e in chunk_entries for r in e.records]
        if len(records) != len(doc["annotations"]):
            raise RuntimeError("COCO export wrote a different number of annotations.")
        for ann, rec in zip(doc["annotations"], records, strict=True):
            ann["segmentation"] = rec["mask"]
            ann["area"] = rec["area"]
            ann["iscrowd"] = 0
            ann["score"] = rec["confidence"]
            ann["clip_score"] = rec["clip_score"]
            ann["sam_iou"] = rec["sam_iou"]
        images.extend(doc["images"])
        annotations.extend(doc["annotations"])
        categories, licenses = doc["categories"], doc["licenses"]
    if not categories:
        categories = [
            {"id": k + 1, "name": c, "supercategory": "common-objects"}
            for k, c in enumerate(classes)
        ]
    result = {
        "info": {
            "description": "Labeled by grounded_sam (text-prompted SAM + CLIP)",
            "grounded_sam": dict(config),
        },
        "licenses": licenses,
        "categories": categories,
        "images": images,
        "annotations": annotations,
    }
    return [atomic_write_json(out / "annotations.json", result)]


def _move_all(src: Path, dst: Path, suffix: str) -> set[str]:
    """Move every file of ``src`` into ``dst`` (atomic renames); returns the names moved."""
    dst.mkdir(parents=True, exist_ok=True)
    moved = set()
    if src.is_dir():
        for path in sorted(src.iterdir()):
            os.replace(path, dst / path.name)
            moved.add(path.name)
    _prune(dst, moved, suffixes=(suffix,))
    return moved


def _export_yolo(
    out: Path,
    staging: Path,
    entries: Sequence[_Entry],
    targets: Sequence[Path],
    classes: list[str],
) -> list[Path]:
    from supervision.dataset.formats.yolo import detections_to_yolo_annotations

    labels, scores = staging / "labels", staging / "scores"
    labels.mkdir()
    scores.mkdir()
    pairs = list(zip(entries, targets, strict=True))
    for chunk in _chunks(pairs, _CHUNK):
        chunk_entries = [e for e, _ in chunk]
        ds, dets_list = _dataset(chunk_entries, [t for _, t in chunk], classes, one_part=True)
        ds.as_yolo(annotations_directory_path=str(labels))
        for entry, target, dets in zip(
            chunk_entries, [t for _, t in chunk], dets_list, strict=True
        ):
            lines: list[str] = []
            for i in range(len(dets)):
                n = len(
                    detections_to_yolo_annotations(
                        dets[i : i + 1],
                        image_shape=(entry.height, entry.width, 3),
                        approximation_percentage=0.0,
                    )
                )
                lines += [f"{float(dets.confidence[i]):.6f}"] * n
            label_file = labels / f"{target.stem}.txt"
            written = label_file.read_text().splitlines() if label_file.exists() else []
            if len(written) != len(lines):
                raise RuntimeError(f"YOLO export of {entry.rel}: label/score lines differ.")
            (scores / f"{target.stem}.txt").write_text("".join(s + "\n" for s in lines))
    _move_all(labels, out / "labels", ".txt")
    _move_all(scores, out / "scores", ".txt")
    import yaml

    data = {"nc": len(classes), "names": list(classes), "train": "images", "val": "images"}
    yaml_path = atomic_write_text(out / "data.yaml", yaml.safe_dump(data, sort_keys=False))
    return [out / "labels", out / "scores", yaml_path]


def _export_voc(
    out: Path,
    staging: Path,
    entries: Sequence[_Entry],
    targets: Sequence[Path],
    classes: list[str],
) -> list[Path]:
    xml_dir = staging / "annotations"
    pairs = list(zip(entries, targets, strict=True))
    for chunk in _chunks(pairs, _CHUNK):
        ds, _ = _dataset([e for e, _ in chunk], [t for _, t in chunk], classes, one_part=True)
        ds.as_pascal_voc(annotations_directory_path=str(xml_dir))
    _move_all(xml_dir, out / "annotations", ".xml")
    return [out / "annotations"]
