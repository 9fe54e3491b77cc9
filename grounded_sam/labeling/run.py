"""Labeling images on one machine: resumable, through the shared many-images loop.

:func:`label_image` is the per-image step of every way of labeling (here and on a Ray cluster,
:mod:`grounded_sam.distributed`): index once, answer all classes from that index.
:func:`label_images` runs it over a job's images with :func:`grounded_sam.batch.iter_results`
(decoding overlapped with model work, batched SAM encoder on CUDA), saves each result as soon
as it is computed (:mod:`grounded_sam.labeling.state`) and exports the dataset
(:mod:`grounded_sam.labeling.export`).

The query knobs are one :class:`~grounded_sam.grounding.options.QueryOptions`, validated when
it is made; what depends on the classes (a class that is also a negative phrase) is checked
once, before the lock, the models or any image.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

from grounded_sam.batch import iter_results
from grounded_sam.export.records import detections_to_records
from grounded_sam.grounding.options import QueryOptions
from grounded_sam.inputs import parse_prompt
from grounded_sam.labeling.config import engine_config, engine_options
from grounded_sam.labeling.export import check_format, export_labeled
from grounded_sam.labeling.lock import dataset_lock
from grounded_sam.labeling.scan import prepare_labeling
from grounded_sam.labeling.state import (
    LabeledImage,
    begin_run,
    load_result,
    save_result,
    source_stamp,
)

if TYPE_CHECKING:
    from grounded_sam.pipeline import GroundedSAM

__all__ = ["LabelReport", "label_folder", "label_image", "label_images", "one_line"]

logger = logging.getLogger(__name__)

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


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (its type's name when it has none)."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def label_image(
    gs: GroundedSAM,
    image: np.ndarray,
    classes: Sequence[str],
    options: QueryOptions | None = None,
    *,
    embedding: Any = None,
) -> list[dict[str, Any]]:
    """Label one image: index it once, answer all classes from that index.

    The per-image step of every way of labeling (:func:`label_images` on one machine and
    :mod:`grounded_sam.distributed` on a Ray cluster), so their datasets cannot differ.

    Args:
        gs: The engine.
        image: (H, W, 3) uint8 RGB.
        classes: Parsed class names (one category each).
        options: The query knobs (None: the engine's defaults).
        embedding: The image's SAM embedding when the many-images loop already encoded it
            in a batch (None: encode here).

    Returns:
        The instance records (:func:`~grounded_sam.export.records.detections_to_records`;
        boxes xyxy in pixels, masks as COCO RLE).
    """
    index = gs.index(image) if embedding is None else gs.index(image, embedding=embedding)
    knobs = {} if options is None else options.to_dict(per_image=False)
    dets = gs.query(index, list(classes), **knobs)
    return detections_to_records(dets, image.shape[:2])


def label_images(
    engine: GroundedSAM | Callable[[], GroundedSAM],
    images_dir: str | os.PathLike,
    images: Sequence[str | os.PathLike],
    classes: str | Sequence[str],
    out_dir: str | os.PathLike,
    fmt: str = "coco",
    *,
    options: QueryOptions | None = None,
    config: Mapping[str, Any] | None = None,
    restart: bool = False,
    progress: bool = True,
    on_failure: Callable[[str, str], None] | None = None,
    lock_wait: float = 0.0,
    **knobs: Any,
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
        options: The query knobs of every image (None: the engine's defaults).
        config: The run's :func:`~grounded_sam.labeling.config.labeling_config`; required
            when ``engine`` is a loader, derived from the engine otherwise.
        restart: Discard saved progress in ``out_dir`` and label every image again.
        progress: Show a progress bar (stderr) with counts and ETA.
        on_failure: Called with ``(relative path, reason)`` when an image fails; the run
            goes on. Default: log a warning.
        lock_wait: Seconds to wait when another run holds ``out_dir`` (0: fail at once).
        **knobs: Changes to ``options`` (any :class:`QueryOptions` field, e.g.
            ``threshold=0.5``, ``negative="handle, saucer"``), as for ``GroundedSAM.query``.

    Returns:
        A :class:`LabelReport`; ``failed`` is non-empty when some images were skipped.

    Raises:
        ValueError: Unknown format, empty class list, a bad knob, a class that is also a
            negative phrase, or ``out_dir`` holds a run with other settings (and ``restart``
            is False).
        TypeError: An unknown knob.
        grounded_sam.labeling.lock.DatasetBusyError: Another run holds ``out_dir``.
    """
    check_format(fmt)
    class_list = parse_prompt(classes, what="class list")
    gs: GroundedSAM | None = engine if hasattr(engine, "index") else None  # type: ignore[assignment]
    if options is None and gs is not None:
        options = engine_options(gs)
    # bad options fail once, before the lock, the models or any image
    checked = (options or QueryOptions()).replace(**knobs)
    checked.negatives_for(class_list)
    if config is None:
        if gs is None:
            raise TypeError("label_images needs config= when engine is a loader function.")
        config = engine_config(gs, class_list, checked)
    with dataset_lock(out_dir, wait=lock_wait):
        return _label_images(
            engine, gs, images_dir, images, class_list, out_dir, fmt, options, knobs,
            config=config, restart=restart, progress=progress, on_failure=on_failure,
        )  # fmt: skip


def _label_images(
    engine: GroundedSAM | Callable[[], GroundedSAM],
    gs: GroundedSAM | None,
    images_dir: str | os.PathLike,
    images: Sequence[str | os.PathLike],
    class_list: list[str],
    out_dir: str | os.PathLike,
    fmt: str,
    options: QueryOptions | None,
    knobs: Mapping[str, Any],
    *,
    config: Mapping[str, Any],
    restart: bool,
    progress: bool,
    on_failure: Callable[[str, str], None] | None,
) -> LabelReport:
    root, out = Path(images_dir), Path(out_dir)
    config = dict(config)
    out.mkdir(parents=True, exist_ok=True)
    begin_run(out, config, restart)

    report = LabelReport(total=len(images))
    entries: list[LabeledImage] = []
    todo: list[tuple[str, Path]] = []
    for path in map(Path, images):
        rel = path.relative_to(root).as_posix()
        entry = load_result(out, rel, path) if path.exists() else None
        if entry is None:
            todo.append((rel, path))
        else:
            entries.append(entry)
    report.reused = len(entries)
    # each file's version before it is read: one replaced while it is labeled is noticed
    stamps = {rel: _stamp(path) for rel, path in todo}
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
            options = engine_options(gs) if options is None else options
        query = None if options is None else options.replace(**knobs)

        def work(image: np.ndarray, embedding: Any) -> list[dict[str, Any]]:
            return label_image(gs, image, class_list, query, embedding=embedding)

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
                fail(rel, one_line(exc))
            else:
                if stamps[rel] is None or _stamp(path) != stamps[rel]:
                    fail(rel, "the file changed while it was labeled; run again to label it")
                else:
                    h, w = image.shape[:2]
                    entry = LabeledImage(rel, path, h, w, records, stamp=stamps[rel])
                    save_result(out, entry)
                    entries.append(entry)
                    report.labeled += 1
            bar.update(1)
    finally:
        if bar is not None:
            bar.close()

    report.exported, report.instances = export_labeled(out, entries, class_list, fmt, config)
    return report


def _stamp(path: Path) -> dict[str, int] | None:
    try:
        return source_stamp(path)
    except OSError:
        return None


def label_folder(
    gs: GroundedSAM,
    images_dir: str | os.PathLike,
    classes: str | Sequence[str],
    out_dir: str | os.PathLike,
    fmt: str = "coco",
    **kwargs: Any,
) -> LabelReport:
    """Label every image under ``images_dir`` and export a dataset into ``out_dir``.

    ``prepare_labeling`` + ``label_images``; see :func:`label_images` for ``kwargs``
    (``options=``, knobs such as ``top_k=``, ``restart=``, ``progress=``, ...).

    Example:
        >>> report = label_folder(gs, "fruits/images", "date, fig, hazelnut",
        ...                       "fruits-coco", fmt="coco")  # doctest: +SKIP
    """
    images = prepare_labeling(images_dir, out_dir)
    return label_images(gs, images_dir, images, classes, out_dir, fmt, **kwargs)
