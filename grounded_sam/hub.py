"""Hugging Face Hub access, checked once before any download.

Loading a model that is not in the local cache while the Hub cannot be reached used to end
after a storm of retries (``Retrying in 8s [Retry 5/5]``, 40-60 s per model) and one warning
line per retry. Here the cache is looked at first and, only when something is missing (or to
decide whether cached files can be used without asking the Hub), the Hub's host is probed
once with a short TCP connection. The result:

* everything cached: loads as before; when the Hub is unreachable, Hugging Face's offline
  mode is switched on for the load (no requests, no retries);
* something missing and the Hub unreachable (or ``HF_HUB_OFFLINE=1``): one
  :class:`~grounded_sam.errors.ModelLoadError` naming *every* missing model and how to get a
  local copy of each, within a few seconds.

Nothing here runs at import time; :func:`quiet_hub_logging` is called by the command line.
"""

from __future__ import annotations

import logging
import os
import socket
import stat
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit

from grounded_sam.errors import ModelLoadError

__all__ = [
    "HubModel",
    "cached",
    "check_readable_file",
    "gated_advice",
    "hub_offline_env",
    "hub_reachable",
    "hub_session",
    "quiet_hub_logging",
    "require_hub_models",
]

logger = logging.getLogger(__name__)

#: Seconds allowed for the one connection attempt that tells whether the Hub is reachable.
PROBE_TIMEOUT_S = 3.0
#: How long a probe's answer is reused (seconds): one probe per model load, not per file.
_PROBE_TTL_S = 60.0
_probe_cache: dict[str, tuple[float, bool]] = {}


@dataclass(frozen=True)
class HubModel:
    """A model that lives in a Hugging Face Hub repository.

    Attributes:
        what: Names the model for the user, e.g. ``"SAM model 'facebook/sam-vit-base'"``.
        repo_id: ``"org/name"`` on the Hub.
        files: Groups of file names; the model is cached when, for every group, at least
            one of its files is in the local cache (e.g. ``(("config.json",),
            ("model.safetensors", "pytorch_model.bin"))``).
        fix: What to do instead, e.g. how to download a local copy and pass it.
        cache_dir: The Hugging Face cache the loader uses (None: the default cache).
    """

    what: str
    repo_id: str
    files: tuple[tuple[str, ...], ...]
    fix: str
    cache_dir: str | None = None


def hub_offline_env() -> bool:
    """Whether Hugging Face offline mode is on (``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``)."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def check_readable_file(path: str | os.PathLike, what: str) -> None:
    """Refuse a model file that is missing, not a regular file, or not readable.

    Only ``stat`` and a non-blocking open (closed at once) are used, so a FIFO or device with
    a model file's name is refused instead of blocking the load forever, and a file without
    read permission says so (instead of a later "No such file" or "not found").

    Args:
        path: The file.
        what: What it is, for the message (``"the CLIP weights"``).

    Raises:
        ModelLoadError: Saying which file, what is wrong and what to do.
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise ModelLoadError(f"Cannot load {what}: {path} does not exist.") from None
    except PermissionError:
        raise ModelLoadError(
            f"Cannot load {what}: permission denied looking up {path} (a folder above it is "
            "not accessible to this user); fix the folder permissions or copy the model."
        ) from None
    if not stat.S_ISREG(mode):
        raise ModelLoadError(
            f"Cannot load {what}: {path} is not a regular file (a folder, FIFO, device or "
            "socket); give the model's weights and config files."
        )
    try:
        os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK))
    except PermissionError:
        raise ModelLoadError(
            f"Cannot load {what}: permission denied reading {path}. Make it readable by this "
            f"user (e.g. chmod a+r '{path}') or use a copy of the model you can read."
        ) from None
    except OSError as exc:
        raise ModelLoadError(f"Cannot load {what}: cannot open {path} ({exc.strerror}).") from None


def gated_advice(repo_id: str, option: str = "--sam") -> str:
    """What to do about a gated Hub repository (one sentence, for a one-line error).

    Gated repositories (``facebook/sam3``) download only for a logged-in account that has
    accepted the licence on the model page; a local copy works offline afterwards.

    Args:
        repo_id: ``"org/name"``.
        option: The command-line option that takes a local copy.
    """
    return (
        f"{repo_id} is gated: accept its licence on https://huggingface.co/{repo_id} while "
        "logged in, log in here with `hf auth login` (or set HF_TOKEN), then run again, or make "
        f"a local copy on a machine that has access (`hf download {repo_id} --local-dir DIR`) "
        f"and pass {option} DIR on the command line (sam='DIR' in Python)."
    )


def cached(model: HubModel) -> bool:
    """Whether every file group of ``model`` has a file in the local Hugging Face cache.

    Raises:
        ModelLoadError: A cached file of the model cannot be read (permission denied), which
            a download would not fix (see :func:`check_readable_file`).
    """
    from huggingface_hub import try_to_load_from_cache

    def in_cache(name: str) -> bool:
        try:
            found = try_to_load_from_cache(model.repo_id, name, cache_dir=model.cache_dir)
        except Exception:  # malformed id etc.: let the real loader report it
            return False
        if not (isinstance(found, str) and os.path.isfile(found)):
            return False
        check_readable_file(found, f"{model.what} (its cached file {name})")
        return True

    return all(any(in_cache(name) for name in group) for group in model.files)


def _probe_target(endpoint: str) -> tuple[str, int] | None:
    """Host and port a TCP probe must reach: the HTTPS/HTTP proxy when one is set."""
    parts = urlsplit(endpoint)
    scheme = parts.scheme or "https"
    for var in (f"{scheme}_proxy", f"{scheme.upper()}_PROXY", "all_proxy", "ALL_PROXY"):
        proxy = os.environ.get(var)
        if proxy:
            no_proxy = os.environ.get("no_proxy") or os.environ.get("NO_PROXY") or ""
            host = parts.hostname or ""
            if not any(h.strip() and host.endswith(h.strip()) for h in no_proxy.split(",")):
                parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
                break
    if not parts.hostname:
        return None
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return parts.hostname, port


def hub_reachable(timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to the Hub (``HF_ENDPOINT``, or its proxy) opens in time.

    One attempt, no retries; the answer is reused for a minute.
    """
    endpoint = _endpoint()
    now = time.monotonic()
    hit = _probe_cache.get(endpoint)
    if hit is not None and now - hit[0] < _PROBE_TTL_S:
        return hit[1]
    target = _probe_target(endpoint)
    ok = False
    if target is not None:
        try:
            with socket.create_connection(target, timeout=timeout):
                ok = True
        except OSError as exc:  # refused, no route, DNS failure, timeout
            logger.info("Hugging Face Hub %s is unreachable: %s", endpoint, exc)
    _probe_cache[endpoint] = (time.monotonic(), ok)
    return ok


def require_hub_models(models: Iterable[HubModel | None]) -> bool:
    """Fail at once, naming every model, when some are neither cached nor downloadable.

    Args:
        models: The hub models about to be loaded; ``None`` entries (local folders, URLs)
            are ignored.

    Returns:
        True when the Hub is unreachable but every model is cached: the caller should load
        in offline mode (see :func:`hub_session`). False otherwise.

    Raises:
        ModelLoadError: Some model is not cached and the Hub cannot be used (offline mode
            or no connection). One message lists each missing model and its fix.
    """
    wanted = [m for m in models if m is not None]
    if not wanted:
        return False
    missing = [m for m in wanted if not cached(m)]
    if hub_offline_env():
        if not missing:
            return False
        reason = "downloads are disabled (HF_HUB_OFFLINE=1)"
    elif hub_reachable():
        return False
    elif not missing:
        logger.info("Hugging Face Hub unreachable: loading the cached copies offline")
        return True
    else:
        reason = f"the Hugging Face Hub ({_endpoint()}) cannot be reached (no network?)"
    names = " and ".join(m.what for m in missing)
    fixes = " ".join(m.fix for m in missing)
    raise ModelLoadError(
        f"Cannot load {names}: not in the local Hugging Face cache and {reason}. {fixes}"
    )


@contextmanager
def hub_session(models: Iterable[HubModel | None]) -> Iterator[None]:
    """Check ``models`` (see :func:`require_hub_models`), then load them inside this block.

    When the Hub is unreachable and everything is cached, Hugging Face's offline mode is on
    inside the block only, so that no request is retried.

    Raises:
        ModelLoadError: As :func:`require_hub_models`.
    """
    offline = require_hub_models(models)
    if not offline:
        yield
        return
    from huggingface_hub import constants

    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


def quiet_hub_logging(verbose: int = 0) -> None:
    """Keep huggingface_hub's and transformers' warnings off stderr unless ``verbose``.

    Both libraries configure their loggers when first imported (resetting levels set before),
    so this imports their logging modules first, then sets the levels. Errors still show.
    """
    if verbose:
        return
    try:
        import huggingface_hub.utils.logging as hub_logging

        hub_logging.set_verbosity_error()
    except ImportError:  # pragma: no cover - a dependency of transformers and open_clip
        pass
    try:
        import transformers.utils.logging as tf_logging

        tf_logging.set_verbosity_error()
    except ImportError:  # pragma: no cover
        pass
