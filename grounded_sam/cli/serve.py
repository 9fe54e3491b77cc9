"""``grounded-sam serve``: the HTTP API and Label Studio ML backend (needs the ``serve`` extra)."""

from __future__ import annotations

import argparse
import logging
import os
from typing import Any

from grounded_sam.cli.common import (
    HelpFormatter,
    add_model_options,
    add_proposal_options,
    load_engine,
    positive_int,
    say,
)
from grounded_sam.cli.options import add_query_options

__all__ = ["add_parser", "run"]

logger = logging.getLogger(__name__)

INSTALL_HINT = 'pip install -e ".[serve]" (from a clone of grounded_sam)'
ENV_API_KEY = "GROUNDED_SAM_API_KEY"  # grounded_sam.serve.auth.ENV_API_KEY (no fastapi import)

DESCRIPTION = """\
Serve the engine over HTTP (FastAPI on uvicorn; OpenAPI docs at /docs):
  GET  /health, /v1/models
  POST /v1/segment    multipart image + prompt (+ query options as form fields) -> JSON
  POST /v1/index      multipart image -> {"index_id": ...}  (content hash; kept in memory)
  POST /v1/query, /v1/predict, /v1/everything   JSON on an index_id
  POST /setup, /predict, /webhook               Label Studio's ML backend protocol
  GET/POST /x-anylabeling/v1/models, /v1/predict X-AnyLabeling's remote-server protocol
The JSON is what 'grounded-sam segment --json' prints. Model calls run one at a time on one
worker thread; image encodes of queued index requests are batched on CUDA. The query flags
below are the defaults of every request. Binds 127.0.0.1 unless --host says otherwise; set
an API key (--api-key or $GROUNDED_SAM_API_KEY) before exposing it.
Needs FastAPI and uvicorn: pip install -e ".[serve]" (from a clone). --ray deploys the
same app on Ray Serve replicas (pip install -e ".[ray-serve]").
"""

EXAMPLE = """\
example:
  GROUNDED_SAM_API_KEY=secret grounded-sam serve --port 9090
  curl -H "Authorization: Bearer secret" -F image=@photo.jpg -F prompt="dog, frisbee" \\
      http://127.0.0.1:9090/v1/segment
  grounded-sam serve --ray auto --host 0.0.0.0 --replicas 4 --gpus-per-replica 1
"""


def add_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``serve`` command."""
    parser = commands.add_parser(
        "serve",
        help="serve the HTTP API and a Label Studio ML backend",
        description=DESCRIPTION,
        epilog=EXAMPLE,
        formatter_class=HelpFormatter,
    )
    group = parser.add_argument_group("server")
    group.add_argument("--host", default="127.0.0.1", help="interface to bind (0.0.0.0: network)")
    group.add_argument("--port", type=positive_int, default=9090, help="TCP port")
    group.add_argument(
        "--api-key",
        default=None,
        help=f"key required on every route but /health; ${ENV_API_KEY} sets it without "
        "showing it in the process list (None: no key)",
    )
    group.add_argument(
        "--index-cache-mb",
        type=positive_int,
        default=2048,
        metavar="MIB",
        help="memory for the image indexes requests share (least recently used ones are "
        "evicted beyond it; their ids then answer 404)",
    )
    group.add_argument(
        "--max-upload-mb", type=positive_int, default=20, help="largest request body (413)"
    )
    group.add_argument(
        "--max-image-pixels",
        type=positive_int,
        default=4096 * 4096,
        help="most pixels of an uploaded or Label Studio image (422)",
    )
    group.add_argument(
        "--max-queue",
        type=positive_int,
        default=64,
        help="requests waiting for the models; more are answered 503",
    )
    group.add_argument(
        "--batch-size",
        type=int,
        default=0,
        help="queued index requests whose images are encoded together (0: 8 on CUDA, 1 on CPU)",
    )
    ls = parser.add_argument_group("Label Studio")
    ls.add_argument(
        "--label-studio-url",
        default=os.environ.get("LABEL_STUDIO_URL") or None,
        metavar="URL",
        help="Label Studio's address, the only host task images are read from "
        "($LABEL_STUDIO_URL); its key comes from $LABEL_STUDIO_API_KEY",
    )
    ls.add_argument(
        "--local-files-root",
        default=os.environ.get("LOCAL_FILES_DOCUMENT_ROOT") or None,
        metavar="DIR",
        help="read Label Studio local-storage files (/data/local-files/?d=...) from this "
        "folder ($LOCAL_FILES_DOCUMENT_ROOT)",
    )
    _add_ray_options(parser)
    add_query_options(parser, per_image=False)
    add_proposal_options(parser)
    add_model_options(parser)
    parser.set_defaults(run=run)
    return parser


def _add_ray_options(parser: argparse.ArgumentParser) -> None:
    """--ray [ADDRESS] and the replica flags (grounded_sam.serve.ray_serve)."""
    group = parser.add_argument_group(
        "Ray Serve (pip install -e '.[ray-serve]' from a clone)",
        "Deploy the same app on Ray Serve: each replica loads its own models and holds its own "
        "index store (an index_id from one replica is a 404 'index again' on another).",
    )
    group.add_argument(
        "--ray",
        nargs="?",
        const="local",
        default=None,
        metavar="ADDRESS",
        help="serve on Ray Serve: no ADDRESS starts a local Ray, 'auto' joins this node's "
        "cluster, 'ray://HOST:10001' connects a Ray client",
    )
    group.add_argument("--replicas", type=int, default=None, help="fixed number of replicas")
    group.add_argument(
        "--min-replicas", type=int, default=None, help="autoscaling: fewest replicas (0 allowed)"
    )
    group.add_argument("--max-replicas", type=int, default=None, help="autoscaling: most replicas")
    group.add_argument(
        "--target-ongoing-requests",
        type=float,
        default=2.0,
        help="autoscaling: requests in flight per replica that Ray scales on",
    )
    group.add_argument(
        "--gpus-per-replica", type=float, default=0.0, help="GPUs per replica (0: CPU)"
    )
    group.add_argument("--cpus-per-replica", type=float, default=1.0, help="CPUs per replica")


RAY_ONLY = ("replicas", "min_replicas", "max_replicas")  # flags that mean nothing without --ray


def ray_plan(args: argparse.Namespace, api_key: str | None, source: dict) -> tuple[Any, Any]:
    """The :class:`~grounded_sam.serve.ray_serve.ServeRecipe` and ``Scaling`` of the flags.

    Raises:
        ValueError: A bad replica flag or combination (checked before anything starts).
    """
    from grounded_sam.serve.ray_serve import Scaling, require_ray_serve

    scaling = Scaling(
        replicas=args.replicas,
        min_replicas=args.min_replicas,
        max_replicas=args.max_replicas,
        target_ongoing_requests=args.target_ongoing_requests,
        gpus_per_replica=args.gpus_per_replica,
        cpus_per_replica=args.cpus_per_replica,
        max_ongoing_requests=args.max_queue,
    )
    if args.device.startswith("cuda") and scaling.gpus_per_replica == 0:
        raise ValueError("--device cuda on Ray Serve needs --gpus-per-replica (e.g. 1).")
    require_ray_serve()
    return ray_recipe(args, api_key, source), scaling


def _run_ray(args: argparse.Namespace, api_key: str | None, source: dict) -> int:
    """``serve --ray``: the app on Ray Serve, one engine per replica, until Ctrl-C."""
    recipe, scaling = ray_plan(args, api_key, source)
    from grounded_sam.serve.ray_serve import serve_forever

    url = f"http://{args.host}:{args.port}"
    serve_forever(
        recipe,
        scaling,
        address=args.ray,
        host=args.host,
        port=args.port,
        verbose=args.verbose > 0,
        ready=lambda: say(args, f"serving on Ray Serve at {url} (API docs at /docs)"),
    )
    return 0


def ray_recipe(args: argparse.Namespace, api_key: str | None, source: dict):
    """The :class:`~grounded_sam.serve.ray_serve.ServeRecipe` of the parsed flags."""
    from grounded_sam.cli.common import proposal_settings
    from grounded_sam.cli.options import query_options
    from grounded_sam.clip.loading import clip_hub_model
    from grounded_sam.distributed.worker import EngineLoader
    from grounded_sam.hub import require_hub_models
    from grounded_sam.sam.loading import sam_hub_model
    from grounded_sam.serve.ray_serve import ServeRecipe

    # here, not on a replica: offline and not cached fails at once, naming both models
    require_hub_models([sam_hub_model(args.sam), clip_hub_model(args.clip)])
    loader = EngineLoader(
        sam=args.sam,
        clip=args.clip,
        device=None if args.device == "auto" else args.device,
        dtype=None if args.dtype == "auto" else args.dtype,
        crop_style=args.crop_style,
        proposal_settings=proposal_settings(args),
        max_regions=args.max_regions,
    )
    return ServeRecipe(
        engine=loader,
        options=query_options(args),
        index_cache_bytes=args.index_cache_mb * 1024**2,
        max_queue=args.max_queue,
        batch_size=args.batch_size or None,
        api_key=api_key,
        max_upload_bytes=args.max_upload_mb * 1024**2,
        max_image_pixels=args.max_image_pixels,
        label_studio=source,
    )


def require_server() -> None:
    """Fail with an install hint when FastAPI / uvicorn (the ``serve`` extra) are missing.

    Raises:
        ImportError: One of them cannot be imported.
    """
    try:
        import fastapi  # noqa: F401
        import multipart  # noqa: F401  (python-multipart: form parsing)
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            f"The server needs FastAPI, uvicorn and python-multipart ({exc.name} is missing). "
            f"Install them with: {INSTALL_HINT}"
        ) from exc


def run(args: argparse.Namespace) -> int:
    """Run ``serve``; returns the exit status once the server stops."""
    require_server()  # before the (slow) model load
    api_key = args.api_key or os.environ.get(ENV_API_KEY) or None
    if args.batch_size < 0:
        raise ValueError(f"--batch-size must be >= 0, got {args.batch_size}.")
    if args.ray is None and any(getattr(args, k) is not None for k in RAY_ONLY):
        raise ValueError("--replicas / --min-replicas / --max-replicas need --ray.")
    from pathlib import Path

    from grounded_sam.serve.labelstudio import ImageSource

    root = None
    if args.local_files_root:
        root = Path(args.local_files_root)
        if not root.is_dir():
            raise FileNotFoundError(f"--local-files-root {root} is not a folder.")
    source_kwargs = {
        "url": args.label_studio_url,
        "api_key": os.environ.get("LABEL_STUDIO_API_KEY") or None,
        "local_root": root,
        "max_bytes": args.max_upload_mb * 1024**2,
    }
    source = ImageSource(**source_kwargs)  # checks LABEL_STUDIO_URL
    if args.host not in ("127.0.0.1", "localhost", "::1") and not api_key:
        logger.warning(
            "Serving on %s without an API key: anyone who can reach it can use it (set $%s).",
            args.host,
            ENV_API_KEY,
        )
    if args.ray is not None:
        return _run_ray(args, api_key, source_kwargs)
    import uvicorn

    from grounded_sam.serve.app import create_app
    from grounded_sam.serve.engine import ServeEngine

    gs = load_engine(args)
    engine = ServeEngine(
        gs,
        index_cache_bytes=args.index_cache_mb * 1024**2,
        max_queue=args.max_queue,
        batch_size=args.batch_size or None,
    )
    app = create_app(
        engine,
        api_key=api_key,
        max_upload_bytes=args.max_upload_mb * 1024**2,
        max_image_pixels=args.max_image_pixels,
        label_studio=source,
    )
    say(args, f"serving on http://{args.host}:{args.port} (API docs at /docs)")
    level = "debug" if args.verbose > 1 else "info" if args.verbose else "warning"
    uvicorn.run(app, host=args.host, port=args.port, log_level=level)
    return 0
