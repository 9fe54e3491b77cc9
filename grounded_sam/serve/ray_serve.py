"""The same FastAPI app on Ray Serve: replicas that each load their own engine.

``grounded-sam serve --ray`` (or :func:`serve_forever`) deploys :func:`build_application`:
one Ray Serve deployment whose FastAPI ingress is the app of
:func:`grounded_sam.serve.app.create_app`, built on each replica by a builder function
(``serve.ingress(builder)``, Ray >= 2.46) from a picklable :class:`ServeRecipe`. The driver
never loads a model: each replica calls the recipe's engine loader
(:class:`grounded_sam.distributed.worker.EngineLoader`) in its own process, on the GPU(s)
Ray gives it (``num_gpus`` per replica), and runs the app's one-worker queue there
(:class:`grounded_sam.serve.engine.ServeEngine`). Routes, errors, the API key and the upload
bounds are the app's own, unchanged.

Scaling is Ray Serve's: a fixed number of replicas (``num_replicas``) or an autoscaling range
(``autoscaling_config``: ``min_replicas`` / ``max_replicas`` and the ``target_ongoing_requests``
per replica that Ray scales on); see :class:`Scaling`. Ray's proxy (one per node, on the
HTTP port) sends each request to the replica with the shorter queue.

The index store is per replica: ``/v1/index`` stores the index on the replica that answered,
so with several replicas a later ``/v1/query`` on that ``index_id`` may reach a replica that
does not hold it and is answered 404 "send the image to /v1/index again". The id is the
content hash of the pixels, so re-sending the image is idempotent on whichever replica gets
it; ``/v1/segment`` and Label Studio's ``/predict`` carry their image and never depend on an
earlier request. Clients that query one image many times should retry an index 404 by
re-indexing, or run one replica per client group.

Ray is imported inside the functions that need it, never at import.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi import FastAPI

    from grounded_sam.grounding.options import QueryOptions
    from grounded_sam.pipeline import GroundedSAM

__all__ = [
    "APP_NAME",
    "INSTALL_HINT",
    "Scaling",
    "ServeRecipe",
    "build_application",
    "deploy",
    "require_ray_serve",
    "serve_forever",
]

logger = logging.getLogger(__name__)

#: The Ray Serve application (and deployment) name.
APP_NAME = "grounded-sam"
INSTALL_HINT = 'pip install -e ".[ray-serve]" (from a clone of grounded_sam)'


def require_ray_serve() -> None:
    """Fail with an install hint when Ray Serve (the ``ray-serve`` extra) is missing.

    Raises:
        ImportError: ``ray.serve`` cannot be imported.
    """
    try:
        import ray.serve  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            f"--ray needs Ray Serve ({exc.name} is missing). Install it with: {INSTALL_HINT}"
        ) from exc


@dataclass
class ServeRecipe:
    """Everything a replica needs to build the server's app; picklable (no model, no lock).

    Args:
        engine: Zero-argument callable that loads the engine on the replica (e.g.
            :class:`grounded_sam.distributed.worker.EngineLoader`).
        options: The server's default query options (None: the engine's own).
        index_cache_bytes: Bound of each replica's index store.
        max_queue: Requests waiting or running per replica; more are answered 503.
        batch_size: Queued index builds encoded together (None: 8 on CUDA, 1 on CPU).
        api_key: Required on every route but ``/health`` when set.
        max_upload_bytes: Largest request body (413 beyond).
        max_image_pixels: Most pixels of an image (422 beyond).
        label_studio: Keyword arguments of
            :class:`grounded_sam.serve.labelstudio.ImageSource` (``url``, ``api_key``,
            ``local_root``, ``max_bytes``); the source itself holds a lock, so it is built on
            the replica.
    """

    engine: Callable[[], GroundedSAM]
    options: QueryOptions | None = None
    index_cache_bytes: int = 2048 * 1024**2
    max_queue: int = 64
    batch_size: int | None = None
    api_key: str | None = None
    max_upload_bytes: int = 20 * 1024**2
    max_image_pixels: int = 4096 * 4096
    label_studio: dict[str, Any] = field(default_factory=dict)

    def build_app(self) -> FastAPI:
        """Load the engine and return the app (on the replica; the models load here)."""
        from grounded_sam.serve.app import create_app
        from grounded_sam.serve.engine import ServeEngine
        from grounded_sam.serve.labelstudio import ImageSource

        t0 = time.perf_counter()
        gs = self.engine()
        if self.options is not None:
            gs.options = self.options
        engine = ServeEngine(
            gs,
            index_cache_bytes=self.index_cache_bytes,
            max_queue=self.max_queue,
            batch_size=self.batch_size,
        )
        logger.info("Replica ready in %.1fs on %s", time.perf_counter() - t0, gs.device)
        return create_app(
            engine,
            api_key=self.api_key,
            max_upload_bytes=self.max_upload_bytes,
            max_image_pixels=self.max_image_pixels,
            label_studio=ImageSource(**self.label_studio),
        )


def _check_count(name: str, flag: str, value: int | None, least: int) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"{name} ({flag}) must be an integer >= {least}, got {value!r}.")


def _check_amount(name: str, flag: str, value: float, *, positive: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (positive and value == 0):
        need = "> 0" if positive else ">= 0"
        raise ValueError(f"{name} ({flag}) must be a number {need}, got {value!r}.")


@dataclass(frozen=True)
class Scaling:
    """How many replicas, and what each one reserves.

    Either a fixed ``replicas`` count, or an autoscaling range (``min_replicas`` and/or
    ``max_replicas`` given; Ray adds replicas while each has more than
    ``target_ongoing_requests`` requests in flight and removes idle ones, down to
    ``min_replicas``, 0 allowed).

    Args:
        replicas: Fixed number of replicas (None: 1, or autoscaling when a range is given).
        min_replicas: Autoscaling lower bound (default 1 when ``max_replicas`` is given).
        max_replicas: Autoscaling upper bound (default ``min_replicas`` or 1).
        target_ongoing_requests: Requests in flight per replica that autoscaling aims at.
        gpus_per_replica: GPUs Ray reserves for each replica (0: CPU; 0.5: two per GPU).
        cpus_per_replica: CPUs Ray reserves for each replica (its torch threads).
        max_ongoing_requests: Requests Ray hands one replica at a time (its own queue,
            ``max_queue``, answers 503 beyond that bound).

    Raises:
        ValueError: A value out of range, or a fixed count combined with a range (the
            message names the flag).
    """

    replicas: int | None = None
    min_replicas: int | None = None
    max_replicas: int | None = None
    target_ongoing_requests: float = 2.0
    gpus_per_replica: float = 0.0
    cpus_per_replica: float = 1.0
    max_ongoing_requests: int = 64

    def __post_init__(self) -> None:
        _check_count("replicas", "--replicas", self.replicas, 1)
        _check_count("min_replicas", "--min-replicas", self.min_replicas, 0)
        _check_count("max_replicas", "--max-replicas", self.max_replicas, 1)
        _check_count("max_ongoing_requests", "--max-queue", self.max_ongoing_requests, 1)
        _check_amount("target_ongoing_requests", "--target-ongoing-requests",
                      self.target_ongoing_requests, positive=True)  # fmt: skip
        _check_amount("gpus_per_replica", "--gpus-per-replica", self.gpus_per_replica)
        _check_amount("cpus_per_replica", "--cpus-per-replica", self.cpus_per_replica)
        if self.replicas is not None and self.autoscaling:
            raise ValueError(
                "Give either --replicas N (a fixed count) or --min-replicas/--max-replicas "
                "(autoscaling), not both."
            )
        low, high = self.min_replicas, self.max_replicas
        if low is not None and high is not None and low > high:
            raise ValueError(f"--min-replicas {low} is more than --max-replicas {high}.")
        if low == 0 and high is None:
            raise ValueError("--min-replicas 0 (scale to zero) needs --max-replicas N >= 1.")

    @property
    def autoscaling(self) -> bool:
        """Whether an autoscaling range was given."""
        return self.min_replicas is not None or self.max_replicas is not None

    def deployment_options(self) -> dict[str, Any]:
        """Keyword arguments of ``serve.deployment`` (replica count or autoscaling, resources)."""
        out: dict[str, Any] = {
            "ray_actor_options": {
                "num_cpus": self.cpus_per_replica,
                "num_gpus": self.gpus_per_replica,
            },
            "max_ongoing_requests": self.max_ongoing_requests,
        }
        if self.autoscaling:
            low = self.min_replicas if self.min_replicas is not None else 1
            high = self.max_replicas if self.max_replicas is not None else max(low, 1)
            out["autoscaling_config"] = {
                "min_replicas": low,
                "max_replicas": high,
                "initial_replicas": max(low, 1),
                "target_ongoing_requests": self.target_ongoing_requests,
            }
        else:
            out["num_replicas"] = self.replicas or 1
        return out


def build_application(recipe: ServeRecipe, scaling: Scaling, *, name: str = APP_NAME) -> Any:
    """The Ray Serve application: one deployment with the app as its FastAPI ingress.

    Args:
        recipe: What each replica builds (its engine is loaded there, not here).
        scaling: Replica count or autoscaling range, and resources per replica.
        name: The deployment's name.

    Returns:
        A bound ``ray.serve.Application`` for ``serve.run``.
    """
    from ray import serve

    def build() -> FastAPI:  # evaluated on each replica (serve.ingress builder function)
        return recipe.build_app()

    @serve.deployment(name=name, max_constructor_retry_count=2, **scaling.deployment_options())
    @serve.ingress(build)
    class GroundedSAMReplica:
        """One replica: its own engine, worker thread and index store."""

    return GroundedSAMReplica.bind()


def deploy(
    recipe: ServeRecipe,
    scaling: Scaling,
    *,
    host: str = "127.0.0.1",
    port: int = 9090,
    name: str = APP_NAME,
) -> None:
    """Start Serve's HTTP proxy on ``host:port`` and run the app; returns once it is running.

    Ray must be initialised (``ray.init``). If Serve already runs on the cluster with other
    HTTP options, Ray keeps those (and logs a warning).

    Raises:
        RuntimeError: A replica could not start (Ray's message, e.g. the model load's error).
    """
    from ray import serve

    serve.start(http_options={"host": host, "port": port})
    serve.run(build_application(recipe, scaling, name=name), name=name, route_prefix="/")
    logger.info("Ray Serve application %r running on http://%s:%d", name, host, port)


def serve_forever(
    recipe: ServeRecipe,
    scaling: Scaling,
    *,
    address: str | None = None,
    host: str = "127.0.0.1",
    port: int = 9090,
    verbose: bool = False,
    ready: Callable[[], None] | None = None,
) -> None:
    """Connect to (or start) Ray, deploy, and keep serving until Ctrl-C or SIGTERM.

    On the way out the application is deleted; Serve and Ray are shut down when this call
    started them (a local Ray); on a cluster it joined, Serve and Ray keep running.

    Args:
        recipe: What each replica builds.
        scaling: Replicas and resources.
        address: None or ``"local"``: start a local Ray; ``"auto"``: this node's cluster;
            ``"ray://HOST:10001"``: a Ray client.
        host: Interface of Serve's HTTP proxy.
        port: Its port.
        verbose: Ray's logs on the console.
        ready: Called once the application is running.
    """
    import signal
    import threading

    import ray
    from ray import serve

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # SIGTERM (kill, docker stop): the same clean exit as Ctrl-C

    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, stop)
    local = address in (None, "", "local")
    connected = False
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {
            "log_to_driver": verbose,
            "logging_level": logging.INFO if verbose else logging.WARNING,
        }
        if address in (None, "", "local"):
            kwargs["include_dashboard"] = False
        else:
            kwargs["address"] = address
        ray.init(**kwargs)
        connected = True
    try:
        deploy(recipe, scaling, host=host, port=port)
        if ready is not None:
            ready()
        while True:
            time.sleep(1.0)
    finally:
        try:
            if local and connected:
                serve.shutdown()
            else:
                serve.delete(APP_NAME)
        finally:
            if connected:
                ray.shutdown()
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
