"""Serving the web page: load the models once, build the page, queue requests, bind locally.

What is shared between requests: the engine (one ``GroundedSAM``) and the page's index store
(one :class:`~grounded_sam.grounding.store.IndexStore`, bounded by ``max_index_bytes``). The
indexes, the store and the CLIP text cache are thread-safe; the model calls are still run one
at a time by default (``concurrency_limit=1``: gradio queues the engine's events), which this
module keeps as the default.
"""

from __future__ import annotations

import inspect
import ipaddress
import logging
import os
from typing import TYPE_CHECKING, Any

from grounded_sam.app.callbacks import MAX_IMAGE_SIDE, MAX_UPLOAD_SIZE
from grounded_sam.grounding.store import DEFAULT_MAX_BYTES
from grounded_sam.pipeline import DEFAULT_CLIP, DEFAULT_SAM

if TYPE_CHECKING:
    import gradio as gr
    import torch

    from grounded_sam.pipeline import GroundedSAM

__all__ = ["launch", "serve", "require_gradio", "INSTALL_HINT"]

logger = logging.getLogger(__name__)

INSTALL_HINT = 'pip install -e ".[app]" (from a clone of grounded_sam)'


def require_gradio() -> None:
    """Fail with an install hint when gradio (the ``app`` extra) is missing.

    Raises:
        ImportError: gradio cannot be imported.
    """
    try:
        import gradio  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            f"The web app needs gradio, which is not installed. Install it with: {INSTALL_HINT}"
        ) from exc


def launch(
    sam: str | os.PathLike = DEFAULT_SAM,
    clip: str = DEFAULT_CLIP,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    host: str = "127.0.0.1",
    port: int = 7860,
    share: bool = False,
    *,
    max_file_size: str | int = MAX_UPLOAD_SIZE,
    max_image_side: int = MAX_IMAGE_SIDE,
    concurrency_limit: int = 1,
    max_queue_size: int | None = 64,
    max_sessions: int = 64,
    max_index_bytes: int = DEFAULT_MAX_BYTES,
    block: bool = True,
    propagator: str | os.PathLike | None = None,
    **engine_kwargs: Any,
) -> gr.Blocks:
    """Load the models and serve the web page (``grounded-sam app``).

    Args:
        sam: SAM model spec (see :meth:`grounded_sam.GroundedSAM.from_pretrained`).
        clip: CLIP model spec.
        device: ``"cuda"``, ``"cpu"``, ...; None picks CUDA when present.
        dtype: ``"float32"``, ``"float16"``, ``"bfloat16"``; None picks per device.
        host: Interface to bind. The default, ``127.0.0.1``, is reachable from this
            machine only; ``0.0.0.0`` exposes the page to the network.
        port: TCP port.
        share: Ask gradio for a public ``*.gradio.live`` link (off unless asked).
        max_file_size: Largest upload gradio accepts (``"20mb"`` or bytes).
        max_image_side: Largest accepted image side in pixels.
        concurrency_limit: Engine requests run at once; further requests wait in the queue.
        max_queue_size: Requests that may wait; beyond that users are told the queue is
            full (None: unbounded).
        max_sessions: Browser sessions whose state (image, result, prompts) is kept in
            memory; the oldest is dropped beyond that. At most twice as many sessions'
            export folders are kept on disk, none unused for more than 2 hours
            (:mod:`grounded_sam.app.exports`).
        max_index_bytes: Bound of the index store all sessions share (2 GiB by default);
            least recently used indexes are dropped beyond it and built again when needed.
        block: Serve until interrupted (True) or return at once with the server running
            in the background (False; stop it with ``.close()`` on the returned Blocks).
        propagator: SAM 2.1 checkpoint of the Video tab (Hub id, alias ``sam2.1_t``, folder)
            or a SAM 3 one (its tracker), loaded on the first clip; None: ``sam``, which must
            then be SAM 2.1 or SAM 3 (otherwise
            the tab says to start the app with ``--propagator``).
        **engine_kwargs: Passed to ``GroundedSAM.from_pretrained`` (``threshold``,
            ``top_k``, ``refine``, ``max_regions``, ``proposal_settings``, ``crop_style``,
            ...). The page's threshold slider starts at the engine's ``threshold``.

    Returns:
        The running (``block=False``) or closed (``block=True``) ``gr.Blocks``.

    Raises:
        ImportError: gradio is not installed (the message says how to install it).
        grounded_sam.errors.ModelLoadError: A model could not be loaded.
    """
    require_gradio()
    from grounded_sam.pipeline import GroundedSAM

    gs = GroundedSAM.from_pretrained(
        sam=sam, clip=clip, device=device, dtype=dtype, **engine_kwargs
    )
    return serve(
        gs,
        host=host,
        port=port,
        share=share,
        max_file_size=max_file_size,
        max_image_side=max_image_side,
        concurrency_limit=concurrency_limit,
        max_queue_size=max_queue_size,
        max_sessions=max_sessions,
        max_index_bytes=max_index_bytes,
        block=block,
        propagator=propagator,
    )


def serve(
    gs: GroundedSAM,
    *,
    host: str = "127.0.0.1",
    port: int = 7860,
    share: bool = False,
    max_file_size: str | int = MAX_UPLOAD_SIZE,
    max_image_side: int = MAX_IMAGE_SIDE,
    concurrency_limit: int = 1,
    max_queue_size: int | None = 64,
    max_sessions: int = 64,
    max_index_bytes: int = DEFAULT_MAX_BYTES,
    block: bool = True,
    propagator: str | os.PathLike | None = None,
) -> gr.Blocks:
    """Serve the page for an already loaded engine (arguments as in :func:`launch`).

    Returns:
        The ``gr.Blocks`` (running when ``block`` is False).
    """
    require_gradio()
    from grounded_sam.app.exports import default_folders
    from grounded_sam.app.ui import build_app

    if concurrency_limit < 1:
        raise ValueError(f"concurrency_limit must be >= 1, got {concurrency_limit}.")
    if max_sessions < 1:
        raise ValueError(f"max_sessions must be >= 1, got {max_sessions}.")
    # sessions' export folders: at most two per kept session, deleted after 2 h unused
    default_folders(max_folders=2 * max_sessions)
    if not _is_loopback(host):
        logger.warning(
            "Serving on %s: anyone who can reach this machine on port %d can use the app.",
            host,
            port,
        )
    limit = max_file_size if isinstance(max_file_size, str) else f"{int(max_file_size)}b"
    demo = build_app(
        gs,
        max_image_side=max_image_side,
        max_upload=limit,
        concurrency_limit=concurrency_limit,
        max_index_bytes=max_index_bytes,
        propagator=propagator,
    )
    demo.queue(max_size=max_queue_size, default_concurrency_limit=concurrency_limit)
    # Optional niceties that only some gradio 6 releases have: no run history kept in the
    # browser (it would store users' images), no API link in the footer.
    optional = {"run_history": False, "footer_links": ["gradio", "settings"]}
    accepted = inspect.signature(demo.launch).parameters
    if not share:
        # gradio's own hint says "set share=True in launch()"; ours names the CLI option.
        print(
            f"* Running on local URL:  http://{host}:{port}\n"
            "* For a public link: grounded-sam app --share (or launch(share=True) in Python)",
            flush=True,
        )
    demo.launch(
        server_name=host,
        server_port=port,
        share=share,
        max_file_size=max_file_size,
        prevent_thread_lock=not block,
        state_session_capacity=max_sessions,
        show_error=False,
        ssr_mode=False,
        inbrowser=False,
        quiet=not share,
        **{k: v for k, v in optional.items() if k in accepted},
    )
    return demo


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
