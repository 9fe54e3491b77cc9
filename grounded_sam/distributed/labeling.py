"""``label_dataset``: the labeling job of ``grounded-sam label`` on a Ray cluster.

The driver lists the images, skips those whose result is already in a complete shard,
and builds a Ray Dataset: ``read_binary_files`` (any filesystem pyarrow opens) followed by
``map_batches(ImageLabeler, concurrency=..., num_gpus=..., batch_size=...)``, where every
actor loads the models once and writes one Parquet shard per batch under
``OUT/.grounded_sam_state/shards``. The driver only streams small status rows for its
progress bar; at the end it reads the shards and writes COCO / YOLO / VOC through
:func:`grounded_sam.labeling.export_labeled`, the exporter of the single-machine path.

Ray is imported here, lazily, and nowhere else in the package.
"""

from __future__ import annotations

import inspect
import logging
import os
import time
import uuid
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from grounded_sam.distributed.shards import ShardRow, read_rows
from grounded_sam.distributed.sources import ImageListing, list_images
from grounded_sam.distributed.worker import EngineLoader, ImageLabeler
from grounded_sam.grounding.options import QueryOptions
from grounded_sam.inputs import parse_prompt
from grounded_sam.labeling.config import labeling_config
from grounded_sam.labeling.export import check_format, export_labeled
from grounded_sam.labeling.lock import dataset_lock
from grounded_sam.labeling.run import LabelReport
from grounded_sam.labeling.state import STATE_DIRNAME, LabeledImage, begin_run

if TYPE_CHECKING:
    from grounded_sam.pipeline import GroundedSAM
    from grounded_sam.sam.everything import EverythingSettings

__all__ = ["RAY_MISSING", "RayLabelReport", "import_ray", "label_dataset"]

logger = logging.getLogger(__name__)

RAY_MISSING = (
    "Labeling on a Ray cluster (--ray) needs Ray Data, which is not installed: run "
    "pip install -e '.[ray]' from a clone (or pip install 'ray[data]>=2.9') in this environment "
    "and on every node of the cluster."
)
"""The message of the ImportError raised when Ray Data is missing."""

SHARDS_DIRNAME = "shards"
SOURCES_DIRNAME = "sources"
MAX_READ_BLOCKS = 100_000
NO_RESULT = "no result: the worker labeling it died {n} time(s) (see the Ray logs)"


@dataclass
class RayLabelReport(LabelReport):
    """What a Ray labeling run did (:class:`~grounded_sam.labeling.LabelReport` plus timing).

    Attributes:
        seconds: Wall time of the whole run (listing, Ray start-up, model loading, export).
        labeling_seconds: From the Ray Dataset's start to its last result.
        startup_seconds: From the Ray Dataset's start to its first result (actors starting
            and loading models, the first batch).
        concurrency: The actor pool size used (an int or a (min, max) range).
    """

    seconds: float = 0.0
    labeling_seconds: float = 0.0
    startup_seconds: float = 0.0
    concurrency: Any = None

    @property
    def images_per_minute(self) -> float:
        """Images labeled by this run per minute of wall time."""
        return 60.0 * self.labeled / self.seconds if self.seconds > 0 else 0.0


def import_ray() -> Any:
    """Import Ray with Ray Data.

    Raises:
        ImportError: With :data:`RAY_MISSING`, when ``ray[data]`` is not installed.
    """
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise ImportError(RAY_MISSING) from exc
    return ray


def peek_grounder(sam: str) -> object | None:
    """The text-grounder family ``sam`` names (SAM 3), or None (see ``sam.loading``)."""
    from grounded_sam.sam.loading import peek_grounder as peek

    return peek(sam)


def _engine_defaults() -> dict[str, Any]:
    from grounded_sam.pipeline import DEFAULT_CLIP, DEFAULT_INDEX_SETTINGS, DEFAULT_SAM, GroundedSAM

    return {
        "sam": DEFAULT_SAM,
        "clip": DEFAULT_CLIP,
        "proposal_settings": DEFAULT_INDEX_SETTINGS,
        "max_regions": inspect.signature(GroundedSAM.__init__).parameters["max_regions"].default,
    }


def _default_concurrency(ray: Any, gpus_per_worker: float, cpus_per_worker: float) -> int | tuple:
    resources = ray.cluster_resources()
    if gpus_per_worker > 0:
        n = int(resources.get("GPU", 0) // gpus_per_worker)
    else:
        # Leave one CPU for reading and decoding files.
        n = int(max(0.0, resources.get("CPU", 1) - 1) // max(cpus_per_worker, 1e-9))
    n = max(1, n)
    return 1 if n == 1 else (1, n)


def label_dataset(
    source: str | os.PathLike,
    classes: str | Sequence[str],
    out_dir: str | os.PathLike,
    fmt: str = "coco",
    *,
    sam: str | os.PathLike | None = None,
    clip: str | None = None,
    device: str | None = None,
    dtype: str | None = None,
    crop_style: str = "masked",
    proposal_settings: EverythingSettings | None = None,
    max_regions: int | None = None,
    options: QueryOptions | None = None,
    engine: Callable[[], GroundedSAM] | None = None,
    address: str | None = None,
    concurrency: int | tuple[int, int] | None = None,
    batch_size: int = 16,
    gpus_per_worker: float = 0.0,
    cpus_per_worker: float = 1.0,
    max_retries: int = 3,
    restart: bool = False,
    progress: bool = True,
    verbose: bool = False,
    on_failure: Callable[[str, str], None] | None = None,
    **knobs: Any,
) -> RayLabelReport:
    """Label images on a Ray cluster and export the same dataset as ``label_folder``.

    Args:
        source: A folder (recursive), a text file of image paths/URIs, or a URI
            (``s3://bucket/images``) of either; see
            :func:`grounded_sam.distributed.sources.list_images`.
        classes: Class names, comma-separated or a list; each becomes one category.
        out_dir: DATASET_DIR, a local path on the driver. On a multi-node cluster it must be
            a shared filesystem mounted at the same path on every node (workers write
            their shards into it).
        fmt: ``"coco"``, ``"yolo"`` or ``"voc"``.
        sam: SAM model spec (default: the engine's default).
        clip: CLIP model spec (default: the engine's default).
        device: Device on the workers (None: CUDA when the worker has a GPU, else CPU).
        dtype: Model precision (None: float16 on CUDA, float32 on CPU).
        crop_style: CLIP crop style.
        proposal_settings: Region-proposal settings of the index.
        max_regions: Proposals scored with CLIP per image.
        options: The query knobs of every image (None: the engine's defaults, those of
            :class:`~grounded_sam.grounding.options.QueryOptions`).
        engine: Advanced: a picklable zero-argument callable that builds the engine on a
            worker, instead of ``from_pretrained`` with the model options above (which
            still name the run's settings in the saved config).
        address: Ray address: None starts a local Ray (unless one is already initialized
            in this process), ``"auto"`` joins the cluster of this node, ``"ray://..."``
            connects a Ray client, ``"host:port"`` a GCS address.
        concurrency: Actors: a fixed number or a ``(min, max)`` autoscaling range. Default:
            ``(1, cluster GPUs / gpus_per_worker)`` with GPUs, else
            ``(1, (cluster CPUs - 1) / cpus_per_worker)``.
        batch_size: Images per actor call; also the images per shard (what a crashed
            actor's retry recomputes).
        gpus_per_worker: GPUs reserved per actor (0 on CPU clusters; fractions share a GPU).
        cpus_per_worker: CPUs reserved per actor.
        max_retries: Times a batch is retried when its actor dies (the actor is restarted);
            after that its images are reported as failed and the job goes on.
        restart: Discard saved progress in ``out_dir`` and label every image again.
        progress: Show a progress bar (stderr): images done, failed, rate.
        verbose: Show Ray's own progress bars and the workers' logs.
        on_failure: Called with ``(relative path, reason)`` for each failed image.
        **knobs: Changes to ``options`` (any ``QueryOptions`` field, e.g. ``threshold=0.5``),
            as for ``GroundedSAM.query``.

    Returns:
        A :class:`RayLabelReport`.

    Raises:
        ImportError: Ray Data is not installed (the message says what to install).
        ValueError: Unknown format, empty class list, a bad knob, a class that is also a
            negative phrase, no images, or ``out_dir`` holds a run with other settings (and
            ``restart`` is False).
        TypeError: An unknown knob.
        FileNotFoundError: ``source`` does not exist.
        grounded_sam.labeling.lock.DatasetBusyError: Another run labels into ``out_dir``.
    """
    t0 = time.perf_counter()
    ray = import_ray()
    check_format(fmt)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    class_list = parse_prompt(classes, what="class list")
    out = Path(out_dir).resolve()
    if out.exists() and not out.is_dir():
        raise ValueError(f"Output path {out} is a file: give a folder for the dataset.")
    listing = list_images(source, exclude=[out])

    d = _engine_defaults()
    sam = os.fspath(sam) if sam is not None else d["sam"]
    clip = clip if clip is not None else d["clip"]
    settings = proposal_settings if proposal_settings is not None else d["proposal_settings"]
    max_regions = max_regions if max_regions is not None else d["max_regions"]
    options = (QueryOptions() if options is None else options).replace(**knobs)
    grounds_text = peek_grounder(sam) is not None  # SAM 3: no CLIP, as the engine records it
    config = labeling_config(
        class_list,
        sam=sam,
        clip="" if grounds_text else clip,
        proposal_settings=settings,
        crop_style=None if grounds_text else crop_style,
        max_regions=max_regions,
        options=options,
    )
    with dataset_lock(out):
        out.mkdir(parents=True, exist_ok=True)
        begin_run(out, config, restart)
        shard_dir = out / STATE_DIRNAME / SHARDS_DIRNAME

        done = _labeled_rels(shard_dir, listing)
        todo = [f for f in listing.files if f.rel not in done]
        report = RayLabelReport(total=len(listing.files), reused=len(done))
        if report.reused:
            logger.info("Resuming: %d of %d images already labeled", report.reused, report.total)

        failed_now: dict[str, str] = {}
        if todo:
            if engine is None:
                engine = EngineLoader(
                    sam=sam,
                    clip=clip,
                    device=device,
                    dtype=dtype,
                    crop_style=crop_style,
                    proposal_settings=settings,
                    max_regions=max_regions,
                    threshold=options.threshold,
                    top_k=options.top_k,
                    refine=options.refine,
                )
            started = _init_ray(ray, address, verbose)
            try:
                if concurrency is None:
                    concurrency = _default_concurrency(ray, gpus_per_worker, cpus_per_worker)
                report.concurrency = concurrency
                t1 = time.perf_counter()
                failed_now, first = _run(
                    ray,
                    listing,
                    todo,
                    report.reused,
                    engine=engine,
                    classes=class_list,
                    options=options,
                    shard_dir=shard_dir,
                    concurrency=concurrency,
                    batch_size=batch_size,
                    gpus_per_worker=gpus_per_worker,
                    cpus_per_worker=cpus_per_worker,
                    max_retries=max_retries,
                    progress=progress,
                    verbose=verbose,
                    on_failure=on_failure,
                )
                report.labeling_seconds = time.perf_counter() - t1
                report.startup_seconds = (first or time.perf_counter()) - t1
            finally:
                if started:
                    ray.shutdown()

        rows = _result_rows(shard_dir, listing)
        cache = out / STATE_DIRNAME / SOURCES_DIRNAME
        entries = []
        for f in listing.files:
            row = rows.get(f.rel)
            if row is None or row.error is not None:
                reason = row.error if row is not None else failed_now.get(f.rel)
                reason = reason or NO_RESULT.format(n=max_retries + 1)
                report.failed.append((f.rel, reason))
                if f.rel not in failed_now and on_failure is not None:
                    on_failure(f.rel, reason)
                continue
            entries.append(
                LabeledImage(f.rel, listing.fetch(f, cache), int(row.height), int(row.width),
                             row.records())
            )  # fmt: skip
        report.reused = len([e for e in entries if e.rel in done])
        report.labeled = len(entries) - report.reused
        report.exported, report.instances = export_labeled(out, entries, class_list, fmt, config)
    report.seconds = time.perf_counter() - t0
    return report


def _labeled_rels(shard_dir: Path, listing: ImageListing) -> set[str]:
    """Images with a saved result, labeled or unreadable.

    A decode error is not retried while the file keeps its size; a worker's failure is.
    """
    sizes = {f.rel: f.size for f in listing.files}
    return {
        row.rel
        for row in read_rows(shard_dir, columns=("rel", "bytes", "error", "stage"))
        if (row.error is None or row.stage == "decode") and sizes.get(row.rel) == row.bytes
    }


def _result_rows(shard_dir: Path, listing: ImageListing) -> dict[str, ShardRow]:
    """The row of each listed image: a labeled row when there is one, else an error row."""
    sizes = {f.rel: f.size for f in listing.files}
    rows: dict[str, ShardRow] = {}
    for row in read_rows(shard_dir):
        if sizes.get(row.rel) != row.bytes:
            continue
        old = rows.get(row.rel)
        if old is None or (old.error is not None and row.error is None):
            rows[row.rel] = row
    return rows


_RAY_BACKEND_LOG_LEVEL = "RAY_BACKEND_LOG_LEVEL"


def _init_ray(ray: Any, address: str | None, verbose: bool) -> bool:
    """Connect to (or start) Ray unless this process already did; True if we did."""
    if ray.is_initialized():
        return False
    level = logging.INFO if verbose else logging.ERROR
    kwargs: dict[str, Any] = {"log_to_driver": verbose, "logging_level": level}
    if address in (None, "", "local"):
        kwargs["include_dashboard"] = False
    else:
        kwargs["address"] = address
    logger.info("Starting Ray (%s)", address or "local")
    saved = os.environ.get(_RAY_BACKEND_LOG_LEVEL)
    if not verbose and saved is None:
        # Ray Data hands every actor its transformer as an object-store reference while
        # keeping actor restarts on, which makes the driver's core worker log an error-level
        # line per actor pool (ray-project/ray#53727) that says nothing actionable to a user
        # of this command. Ray's C++ log level is read once, at init; -v keeps it.
        os.environ[_RAY_BACKEND_LOG_LEVEL] = "fatal"
    try:
        ray.init(**kwargs)
    finally:
        if saved is None:
            os.environ.pop(_RAY_BACKEND_LOG_LEVEL, None)
    return True


def _run(
    ray: Any,
    listing: ImageListing,
    todo: Sequence[Any],
    reused: int,
    *,
    engine: Callable[[], GroundedSAM],
    classes: list[str],
    options: QueryOptions,
    shard_dir: Path,
    concurrency: int | tuple[int, int],
    batch_size: int,
    gpus_per_worker: float,
    cpus_per_worker: float,
    max_retries: int,
    progress: bool,
    verbose: bool,
    on_failure: Callable[[str, str], None] | None,
) -> tuple[dict[str, str], float | None]:
    """Run the Ray Dataset, driving the progress bar.

    Returns:
        The failures it saw (relative path -> reason) and the time of the first result.
    """
    ctx = ray.data.DataContext.get_current()
    saved = (ctx.enable_progress_bars, ctx.max_errored_blocks)
    # Our bar replaces Ray's; a batch whose actor keeps dying is reported, not fatal.
    ctx.enable_progress_bars = verbose
    ctx.max_errored_blocks = -1
    ray_logger = logging.getLogger("ray.data")
    saved_level = ray_logger.level
    if not verbose:
        ray_logger.setLevel(logging.ERROR)
    run_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
    if isinstance(concurrency, int):
        pool = ray.data.ActorPoolStrategy(size=concurrency)
    else:
        pool = ray.data.ActorPoolStrategy(min_size=concurrency[0], max_size=concurrency[1])
    fn_constructor_kwargs = {
        "engine": engine,
        "classes": classes,
        "options": options,
        "root": listing.root,
        "shard_dir": os.fspath(shard_dir),
        "run_id": run_id,
    }
    failed: dict[str, str] = {}
    first: float | None = None
    bar = tqdm(
        total=reused + len(todo),
        initial=reused,
        unit="img",
        desc="Labeling on Ray",
        disable=not progress,
        dynamic_ncols=True,
    )
    try:
        with warnings.catch_warnings():
            # Ray >= 2.5x prefers named remote args, but has none for retries yet.
            warnings.simplefilter("ignore", DeprecationWarning)
            ds = _dataset(ray, listing, todo, pool, fn_constructor_kwargs, batch_size,
                          cpus_per_worker, gpus_per_worker, max_retries)  # fmt: skip
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            first = first or time.perf_counter()
            for rel, error in zip(batch["rel"], batch["error"], strict=True):
                if error:
                    failed[str(rel)] = str(error)
                    if on_failure is not None:
                        on_failure(str(rel), str(error))
                    else:
                        logger.warning("Skipped %s: %s", rel, error)
            bar.update(len(batch["rel"]))
            bar.set_postfix(failed=len(failed), refresh=False)
    finally:
        bar.close()
        ctx.enable_progress_bars, ctx.max_errored_blocks = saved
        ray_logger.setLevel(saved_level)
    return failed, first


def _dataset(
    ray: Any,
    listing: ImageListing,
    todo: Sequence[Any],
    pool: Any,
    fn_constructor_kwargs: dict[str, Any],
    batch_size: int,
    cpus_per_worker: float,
    gpus_per_worker: float,
    max_retries: int,
) -> Any:
    """read_binary_files -> map_batches(ImageLabeler) on an actor pool."""
    remote: dict[str, Any] = {"max_restarts": -1, "max_task_retries": max_retries}
    if gpus_per_worker:
        remote["num_gpus"] = gpus_per_worker
    # One read block per batch: an actor task then covers one batch, so results (and the
    # driver's progress bar) arrive batch by batch instead of one large block at a time.
    blocks = max(1, min(-(-len(todo) // batch_size), MAX_READ_BLOCKS))
    return ray.data.read_binary_files(
        [f.path for f in todo],
        include_paths=True,
        filesystem=listing.filesystem,
        override_num_blocks=blocks,
    ).map_batches(
        ImageLabeler,
        fn_constructor_kwargs=fn_constructor_kwargs,
        batch_size=batch_size,
        batch_format="numpy",
        compute=pool,
        num_cpus=cpus_per_worker,
        **remote,
    )
