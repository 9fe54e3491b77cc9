"""The one-device worker: every model call of the server, one at a time, on one thread.

The HTTP side (uvicorn's event loop, the request handlers) never runs a model: a handler
decodes its upload, then hands a job to :class:`ServeEngine` and awaits its future. One worker
thread runs the jobs, so requests on one device are serialised (the models, the device memory
and the box-decode caches of an index see one caller at a time) and the event loop stays free:
``/health`` answers while the worker is busy with a slow request.

What is batched: image encodes. When the worker takes an index build (``/v1/index``,
``/v1/segment``, a Label Studio task) and more index builds of other images are already
queued, it takes up to ``batch_size`` of them and runs the SAM image encoder once for all
(``predictor.encode_batch``); the rest of each index (grid proposals, CLIP regions, box
decodes) and every query, predict and everything call run one request at a time. Nothing is
held back to wait for a batch to fill. ``batch_size`` defaults to 8 on CUDA and 1 (no
batching) on CPU, where a batched encoder is not faster (:mod:`grounded_sam.batch`). A batch
pulls the queued index builds ahead of other queued jobs; everything else runs in arrival
order.

The queue is bounded (``max_queue`` jobs waiting or running): beyond it a request is refused
at once with :class:`Busy` (HTTP 503) instead of waiting without bound.

Indexes live in one :class:`~grounded_sam.grounding.store.IndexStore` (LRU, bounded by bytes)
keyed by :func:`content_id`, the SHA-256 of the decoded pixels: the same image is indexed
once, whichever route sent it; an evicted id is :class:`UnknownIndex` (HTTP 404).

Thread safety: :meth:`ServeEngine.submit` and the ``async`` methods may be called from any
thread or event loop; the jobs themselves run on the worker thread only.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from grounded_sam.grounding.store import DEFAULT_MAX_BYTES, IndexStore

if TYPE_CHECKING:
    import supervision as sv

    from grounded_sam.grounding.index import ImageIndex
    from grounded_sam.grounding.options import QueryOptions
    from grounded_sam.pipeline import GroundedSAM

__all__ = ["Busy", "ServeEngine", "UnknownIndex", "content_id"]

logger = logging.getLogger(__name__)

#: Index builds encoded together on CUDA when ``batch_size`` is not given.
CUDA_BATCH_SIZE = 8


class Busy(RuntimeError):
    """The worker's queue is full (HTTP 503): try again shortly."""


class UnknownIndex(LookupError):
    """No index with this id: never made, or evicted to stay within the bound (HTTP 404)."""


def content_id(image: np.ndarray) -> str:
    """The id of an image's index: SHA-256 (hex) of its shape and decoded RGB pixels.

    Args:
        image: (H, W, 3) uint8 RGB.
    """
    digest = hashlib.sha256()
    digest.update(repr(tuple(image.shape)).encode())
    digest.update(np.ascontiguousarray(image).data)
    return digest.hexdigest()


@dataclass
class _Job:
    """One unit of work: ``run(embedding)``; ``image``/``key`` set when it may index."""

    run: Callable[[Any], Any]
    future: Future = field(default_factory=Future)
    image: np.ndarray | None = None
    key: str | None = None


class ServeEngine:
    """The engine behind the server: one worker thread, a bounded queue, a shared store.

    Args:
        gs: The loaded engine (its ``options`` are the server's default query options).
        index_cache_bytes: Bound of the index store.
        max_queue: Most jobs waiting or running; more are refused with :class:`Busy`.
        batch_size: Most queued index builds whose images are encoded together (None: 8 on
            CUDA, 1 elsewhere).

    Attributes:
        gs: The engine.
        store: The index store.
        batches: Encoder calls that took more than one image (a counter).
    """

    def __init__(
        self,
        gs: GroundedSAM,
        *,
        index_cache_bytes: int = DEFAULT_MAX_BYTES,
        max_queue: int = 64,
        batch_size: int | None = None,
    ) -> None:
        if isinstance(max_queue, bool) or not isinstance(max_queue, int) or max_queue < 1:
            raise ValueError(f"max_queue must be a positive integer, got {max_queue!r}.")
        if batch_size is None:
            batch_size = CUDA_BATCH_SIZE if getattr(gs.device, "type", "") == "cuda" else 1
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
        self.gs = gs
        self.store = IndexStore(index_cache_bytes)
        self.max_queue = max_queue
        self.batch_size = batch_size
        self.batches = 0
        self._jobs: deque[_Job] = deque()
        self._cond = threading.Condition()
        self._pending = 0
        self._closed = False
        self._thread: threading.Thread | None = None

    # -- the worker -----------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Jobs waiting or running."""
        return self._pending

    def start(self) -> None:
        """Start the worker thread (done by the first :meth:`submit` if not called)."""
        with self._cond:
            if self._closed:
                raise RuntimeError("The engine was closed.")
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name="grounded-sam-worker", daemon=True
                )
                self._thread.start()

    def close(self, timeout: float | None = 30.0) -> None:
        """Stop taking jobs, finish the queued ones, and stop the worker."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def submit(
        self,
        run: Callable[[Any], Any],
        *,
        image: np.ndarray | None = None,
        key: str | None = None,
    ) -> Future:
        """Queue ``run(embedding)`` for the worker.

        Args:
            run: Called on the worker with the image's SAM embedding when this job was part of
                a batched encode, else None (then ``run`` encodes, if it needs to).
            image: The (H, W, 3) uint8 image ``run`` indexes (makes the job batchable).
            key: The image's :func:`content_id` (a stored index needs no encode).

        Returns:
            The job's future (its result or exception).

        Raises:
            Busy: ``max_queue`` jobs are already waiting or running.
        """
        self.start()
        job = _Job(run=run, image=image, key=key)
        with self._cond:
            if self._closed:
                raise Busy("The server is shutting down.")
            if self._pending >= self.max_queue:
                raise Busy(
                    f"The server is busy: {self._pending} requests are queued (the limit is "
                    f"{self.max_queue}). Retry shortly."
                )
            self._pending += 1
            self._jobs.append(job)
            self._cond.notify()
        return job.future

    async def call(
        self, run: Callable[[Any], Any], *, image: np.ndarray | None = None, key: str | None = None
    ) -> Any:
        """:meth:`submit`, awaited from an event loop (the loop is never blocked)."""
        return await asyncio.wrap_future(self.submit(run, image=image, key=key))

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._jobs and not self._closed:
                    self._cond.wait()
                if not self._jobs:
                    return
                group = [self._jobs.popleft()]
                if group[0].image is not None and self.batch_size > 1:
                    others: list[_Job] = []
                    while self._jobs and len(group) < self.batch_size:
                        job = self._jobs.popleft()
                        (group if job.image is not None else others).append(job)
                    self._jobs.extendleft(reversed(others))
            try:
                self._run_group(group)
            finally:
                with self._cond:
                    self._pending -= len(group)

    def _run_group(self, group: Sequence[_Job]) -> None:
        embeddings = self._encode_together(group) if len(group) > 1 else [None]
        for job, embedding in zip(group, embeddings, strict=True):
            if not job.future.set_running_or_notify_cancel():
                continue
            try:
                job.future.set_result(job.run(embedding))
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting request
                job.future.set_exception(exc)

    def _encode_together(self, group: Sequence[_Job]) -> list[Any]:
        """One encoder call for the images of ``group`` that have no stored index yet."""
        out: list[Any] = [None] * len(group)
        todo: dict[str, list[int]] = {}
        for i, job in enumerate(group):
            if job.key is None or job.key not in self.store:
                todo.setdefault(job.key or f"#{i}", []).append(i)
        if len(todo) < 2:
            return out
        try:
            embeddings = self.gs.predictor.encode_batch(
                [group[ids[0]].image for ids in todo.values()]
            )
        except Exception:  # e.g. out of device memory: each job encodes on its own
            logger.warning("Batched encode of %d images failed; encoding one at a time",
                           len(todo), exc_info=True)  # fmt: skip
            return out
        self.batches += 1
        logger.info("Encoded %d queued images in one batch", len(todo))
        for ids, embedding in zip(todo.values(), embeddings, strict=True):
            for i in ids:
                out[i] = embedding
        return out

    # -- operations (each one job on the worker) ---------------------------------------------

    def lookup(self, key: str) -> ImageIndex:
        """The stored index ``key`` (now the most recently used).

        Raises:
            UnknownIndex: Not stored (never made, or evicted).
        """
        index = self.store.get(key)
        if index is None:
            raise UnknownIndex(
                f"No index with id {key!r}: it was never made or was evicted to keep the "
                "server's index cache within its bound (--index-cache-mb). Send the image to "
                "/v1/index again (the same image gets the same id)."
            )
        return index

    def _index_now(
        self, image: np.ndarray, key: str, embedding: Any, *, must_store: bool
    ) -> tuple[ImageIndex, bool]:
        """The stored index of ``image`` or a new one (stored when it fits); on the worker."""
        index = self.store.get(key)
        if index is not None:
            return index, False
        index = self.gs.index(image, embedding=embedding)
        try:
            self.store.put(key, index)
        except ValueError:
            if must_store:
                raise
            logger.warning("An index of %s bytes is larger than the store; not kept", index.nbytes)
        return index, True

    async def index(self, image: np.ndarray) -> tuple[str, ImageIndex, bool]:
        """Index ``image`` (once: the same pixels reuse the stored index).

        Returns:
            ``(index_id, index, built)``.

        Raises:
            ValueError: The index alone is larger than the store's bound.
            Busy: The queue is full.
        """
        key = content_id(image)
        index, built = await self.call(
            lambda emb: self._index_now(image, key, emb, must_store=True), image=image, key=key
        )
        return key, index, built

    async def segment(
        self, image: np.ndarray, phrases: list[str] | None, options: QueryOptions
    ) -> tuple[str, sv.Detections]:
        """Index ``image`` (kept in the store, reused when stored) and answer the phrases.

        Returns:
            ``(index_id, detections)`` as :meth:`GroundedSAM.query` returns them.
        """
        key = content_id(image)

        def run(embedding: Any) -> sv.Detections:
            index, _ = self._index_now(image, key, embedding, must_store=False)
            return self.gs.query(index, phrases or None, options)

        return key, await self.call(run, image=image, key=key)

    async def query(
        self, key: str, phrases: list[str] | None, options: QueryOptions
    ) -> tuple[ImageIndex, sv.Detections]:
        """Answer phrases from the stored index ``key``.

        Raises:
            UnknownIndex: No such index.
        """

        def run(_: Any) -> tuple[ImageIndex, sv.Detections]:
            index = self.lookup(key)
            return index, self.gs.query(index, phrases or None, options)

        return await self.call(run)

    async def predict(self, key: str, **prompts: Any) -> tuple[ImageIndex, sv.Detections]:
        """SAM's point / box prompts on the stored index ``key`` (its kept embedding)."""

        def run(_: Any) -> tuple[ImageIndex, sv.Detections]:
            index = self.lookup(key)
            return index, self.gs.predict(index, **prompts)

        return await self.call(run)

    async def everything(
        self, key: str, settings: dict[str, Any]
    ) -> tuple[ImageIndex, sv.Detections]:
        """SAM's automatic masks on the stored index ``key`` (its embedding is reused)."""

        def run(_: Any) -> tuple[ImageIndex, sv.Detections]:
            index = self.lookup(key)
            return index, self.gs.everything(index, **settings)

        return await self.call(run)

    # -- what is loaded ---------------------------------------------------------------------

    @property
    def model_version(self) -> str:
        """``grounded-sam-VERSION-FINGERPRINT``: changes with the package or the weights."""
        from grounded_sam import __version__

        return f"grounded-sam-{__version__}-{(self.gs.model_fingerprint or 'unknown')[:12]}"

    def describe(self) -> dict[str, Any]:
        """What ``/v1/models`` shows: models, device, dtype, defaults and bounds."""
        from grounded_sam.results import model_metadata

        predictor = self.gs.predictor
        settings = self.gs.proposal_settings
        return {
            "models": model_metadata(predictor, self.gs.model_ids),
            "model_version": self.model_version,
            "device": str(self.gs.device),
            "dtype": str(getattr(predictor, "dtype", "")).replace("torch.", ""),
            "default_options": self.gs.options.to_dict(),
            "proposals": {
                "points_per_side": settings.points_per_side,
                "pred_iou_thresh": settings.pred_iou_thresh,
                "stability_score_thresh": settings.stability_score_thresh,
                "box_nms_thresh": settings.box_nms_thresh,
                "crop_n_layers": settings.crop_n_layers,
                "max_regions": self.gs.max_regions,
            },
            "index_cache": {
                "max_bytes": self.store.max_bytes,
                "bytes": self.store.nbytes,
                "indexes": len(self.store),
            },
            "worker": {
                "batch_size": self.batch_size,
                "batched": "image encodes of queued index builds"
                if self.batch_size > 1
                else "nothing (batch_size 1)",
                "max_queue": self.max_queue,
                "pending": self.pending,
            },
        }
