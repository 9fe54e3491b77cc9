"""Reading Label Studio task images: only from Label Studio itself, or a local-files root.

A task's image reference is resolved as label_studio_sdk's ``get_local_path`` resolves it
(``label_studio_sdk/_extensions/label_studio_tools/core/utils/io.py``), with one difference:
nothing is fetched from any host but ``LABEL_STUDIO_URL``'s.

* uploads: ``/data/upload/P/NAME`` (``upload/...`` too) and ``/storage-data/uploaded/?filepath=``;
* local storage: ``/data/local-files/?d=REL``, read from the local-files root when one is
  configured (``LOCAL_FILES_DOCUMENT_ROOT``; never outside it), else from Label Studio;
* cloud storage: ``s3://``, ``gs://``, ``azure-blob://`` URIs (Label Studio sends the task's
  raw data to ML backends) are asked of Label Studio at ``/tasks/ID/presign/?fileuri=B64``
  (the URI base64url-encoded, as Label Studio encodes it; ``/presign/`` is the name every
  Label Studio version answers, ``/resolve/`` the newer alias); references Label Studio has
  already resolved, ``/tasks/ID/resolve/?fileuri=...`` or ``/projects/ID/resolve/...``,
  relative or absolute on its host, are read as they are;
* an absolute ``http(s)`` URL on Label Studio's own host (scheme, host and port) whose path
  is one of the above.

Only those paths are asked of Label Studio (the API key opens every endpoint, ``/api/...``
too): a path with a ``..`` or ``.`` segment, percent-encoded or not, is refused, as is any
other path. Redirects are followed only while they stay on that host and on those paths. A
cloud storage with *Use pre-signed URLs* on answers with a redirect to the bucket (e.g.
``https://BUCKET.s3...``): that is refused with a message saying to turn the option off, which
makes Label Studio proxy the file (as Label Studio 1.23's ``io_storages/proxy_api.py``
does). Requests carry ``LABEL_STUDIO_API_KEY`` (a legacy token as ``Token KEY``; a personal
access token, a JWT, is exchanged at ``/api/token/refresh`` for a short-lived ``Bearer``
token).
"""

from __future__ import annotations

import base64
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urljoin, urlsplit

__all__ = ["CLOUD_SCHEMES", "ImageSource", "LabelStudioError", "presign_path"]

#: URI schemes of Label Studio's cloud storages.
CLOUD_SCHEMES = ("s3", "gs", "azure-blob")
#: Same-host redirects followed for one image.
MAX_REDIRECTS = 5
#: Paths of Label Studio's storage resolver (the file of a cloud URI, proxied or presigned).
_RESOLVER = re.compile(r"^/(tasks|projects)/\d+/(resolve|presign)/?$")
#: Prefixes of the paths of Label Studio's files (uploads, local and cloud storage).
_FILE_PREFIXES = ("/data/", "/storage-data/")
_FILES = "/data/..., /storage-data/..., cloud storage through /tasks/ID/presign/"


def _is_file_path(path: str) -> bool:
    """Whether a URL path is one of Label Studio's files (no dot segments, even encoded).

    The path is percent-decoded until it no longer changes (``%252e`` -> ``%2e`` -> ``.``)
    before its segments are checked, so no encoding of ``..`` reaches Label Studio.
    """
    decoded = path
    for _ in range(5):
        step = unquote(decoded)
        if step == decoded:
            break
        decoded = step
    else:
        return False  # still encoded after five rounds: nothing Label Studio's files use
    if any(seg in (".", "..") for seg in re.split(r"[/\\]", decoded)):
        return False
    return path.startswith(_FILE_PREFIXES) or bool(_RESOLVER.match(path))


class LabelStudioError(ValueError):
    """A task or config the backend cannot use; ``status`` is the HTTP status (422/502)."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


def presign_path(uri: str, task_id: object) -> str:
    """Label Studio's path for a cloud URI of a task: ``/tasks/ID/presign/?fileuri=B64``.

    Raises:
        LabelStudioError: No usable task id (a positive integer).
    """
    if isinstance(task_id, bool) or not str(task_id or "").isdigit() or int(str(task_id)) < 1:
        raise LabelStudioError(
            f"The task image {uri[:80]!r} is in Label Studio's cloud storage, and reading it "
            f"needs the task's id, which the task does not have (id={task_id!r})."
        )
    encoded = base64.urlsafe_b64encode(uri.encode()).decode()
    return f"/tasks/{int(str(task_id))}/presign/?fileuri={encoded}"


def _not_a_file(ref: str) -> LabelStudioError:
    return LabelStudioError(
        f"Cannot read the task image {ref[:80]!r}: this server reads only Label Studio's files "
        f"({_FILES}) and local storage, never other Label Studio paths or other URLs; give "
        "an upload, a local or a cloud storage file."
    )


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


@dataclass
class ImageSource:
    """Where task images may be read from.

    Args:
        url: Label Studio's base URL (``LABEL_STUDIO_URL``), e.g. ``http://127.0.0.1:8080``.
        api_key: Its API key (``LABEL_STUDIO_API_KEY``): a legacy token or a personal access
            token.
        local_root: Files of Label Studio's local storage (``/data/local-files/?d=REL``) are
            read from ``local_root / REL`` (``LOCAL_FILES_DOCUMENT_ROOT``); never outside it.
        max_bytes: Largest image read.
        timeout: Seconds per HTTP request to Label Studio.
    """

    url: str | None = None
    api_key: str | None = None
    local_root: Path | None = None
    max_bytes: int = 20 * 1024 * 1024
    timeout: float = 30.0

    def __post_init__(self) -> None:
        if self.url:
            parts = urlsplit(self.url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError(
                    f"LABEL_STUDIO_URL must be http(s)://host[:port], got {self.url!r}."
                )
            self.url = self.url.rstrip("/")
        if self.local_root is not None:
            self.local_root = Path(self.local_root).resolve()
        self._lock = threading.Lock()
        self._bearer: tuple[str, float] | None = None

    def read(self, ref: str, task_id: object = None) -> bytes:
        """The bytes of a task's image reference (blocking; run it off the event loop).

        Args:
            ref: The task's image value (see the module doc for what is read).
            task_id: The task's id (needed for cloud storage URIs).

        Raises:
            LabelStudioError: A reference this server may not or cannot read (422), or Label
                Studio did not give the file (502).
        """
        if not isinstance(ref, str) or not ref:
            raise LabelStudioError("The task has no image URL under its image key.")
        parts = urlsplit(ref)
        if parts.path.startswith("/data/local-files") and self.local_root is not None:
            rel = parse_qs(parts.query).get("d", [""])[0]
            return self._local(unquote(rel))
        if parts.scheme in CLOUD_SCHEMES:
            return self._get(presign_path(ref, task_id), what=ref)
        if parts.scheme in ("http", "https"):
            if not self.url or _origin(ref) != _origin(self.url):
                raise LabelStudioError(
                    f"The task image {ref[:80]!r} is not on the configured Label Studio host "
                    f"({self.url or 'none: set LABEL_STUDIO_URL'}); this server reads images "
                    "only from there or from its local-files root."
                )
            if not _is_file_path(parts.path):
                raise _not_a_file(ref)
            return self._get(ref, what=ref)
        if parts.scheme or parts.netloc:
            raise LabelStudioError(
                f"Cannot read the task image {ref[:80]!r}: give Label Studio uploads, local "
                "storage or cloud storage (this server never fetches other URLs)."
            )
        path = ref if ref.startswith("/") else f"/{ref}"
        if path.startswith("/upload/"):
            path = "/data" + path
        if _is_file_path(urlsplit(path).path):
            return self._get(path, what=ref)
        raise _not_a_file(ref)

    def _local(self, rel: str) -> bytes:
        from grounded_sam.serve.limits import PayloadTooLarge

        root = self.local_root
        assert root is not None
        path = (root / rel.lstrip("/")).resolve()
        if not path.is_relative_to(root) or not rel:
            raise LabelStudioError(f"The local file {rel!r} is outside the local-files root.")
        if not path.is_file():
            raise LabelStudioError(f"The local file {rel!r} is not under the local-files root.")
        if path.stat().st_size > self.max_bytes:
            raise PayloadTooLarge(f"The local file {rel!r} is over {self.max_bytes:,} bytes.")
        return path.read_bytes()

    def _headers(self, client: Any) -> dict[str, str]:
        key = self.api_key or ""
        if not key:
            raise LabelStudioError(
                "Reading Label Studio's files needs its API key: set LABEL_STUDIO_API_KEY "
                "(Account & Settings > Access token)."
            )
        if key.count(".") != 2:  # a legacy token
            return {"Authorization": f"Token {key}"}
        with self._lock:  # a personal access token: exchange it for a short-lived one
            if self._bearer is None or self._bearer[1] < time.monotonic():
                r = client.post(f"{self.url}/api/token/refresh", json={"refresh": key})
                try:
                    answer = r.json()
                except ValueError:  # json.JSONDecodeError: a login page, a proxy's error page
                    raise LabelStudioError(
                        f"Label Studio's /api/token/refresh answered {r.status_code} with "
                        f"{r.headers.get('content-type') or 'a body'} that is not JSON: check "
                        "that LABEL_STUDIO_URL is Label Studio itself (not a proxy or login "
                        "page) and that LABEL_STUDIO_API_KEY is its personal access token.",
                        status=502,
                    ) from None
                if r.status_code != 200 or not isinstance(answer, dict) or "access" not in answer:
                    raise LabelStudioError(
                        f"Label Studio refused the API key ({r.status_code} from "
                        "/api/token/refresh): check LABEL_STUDIO_API_KEY.",
                        status=502,
                    )
                self._bearer = (str(answer["access"]), time.monotonic() + 240)
            return {"Authorization": f"Bearer {self._bearer[0]}"}

    def _get(self, target: str, *, what: str) -> bytes:
        """GET a path on Label Studio (or an absolute URL on its host), same-host redirects.

        Args:
            target: ``/path?query`` under ``LABEL_STUDIO_URL``, or an absolute URL on its host.
            what: The task's reference, for messages.
        """
        import httpx

        if not self.url:
            raise LabelStudioError(
                f"The task image {what[:80]!r} is a Label Studio file, but LABEL_STUDIO_URL is "
                "not set: start the server with --label-studio-url (or set LABEL_STUDIO_URL) "
                "and LABEL_STUDIO_API_KEY, or --local-files-root for local storage."
            )
        url = target if urlsplit(target).scheme in ("http", "https") else self.url + target
        try:
            with httpx.Client(timeout=self.timeout, follow_redirects=False) as client:
                headers = self._headers(client)
                for _ in range(MAX_REDIRECTS + 1):
                    with client.stream("GET", url, headers=headers) as r:
                        if r.is_redirect:
                            url = self._redirect(url, r.headers.get("location", ""), what)
                            continue
                        return self._body(r, url)
        except httpx.HTTPError as exc:
            raise LabelStudioError(
                f"Could not reach Label Studio at {self.url} ({type(exc).__name__}): check "
                "LABEL_STUDIO_URL.",
                status=502,
            ) from None
        raise LabelStudioError(
            f"Label Studio redirected the task image {what[:80]!r} more than {MAX_REDIRECTS} "
            "times.",
            status=502,
        )

    def _redirect(self, url: str, location: str, what: str) -> str:
        """The next URL of a redirect, refused unless it stays on Label Studio's files."""
        target = urljoin(url, location)
        if not location or _origin(target) != _origin(self.url or ""):
            raise LabelStudioError(
                f"Label Studio sent the task image {what[:80]!r} to "
                f"{_origin(target) if location else 'nowhere'} (a pre-signed URL of its cloud "
                "storage); this server reads images only from Label Studio: turn off 'Use "
                "pre-signed URLs' in the project's cloud storage settings so that Label Studio "
                "proxies the file.",
                status=502,
            )
        if not _is_file_path(urlsplit(target).path):
            raise LabelStudioError(
                f"Label Studio redirected the task image {what[:80]!r} to "
                f"{urlsplit(target).path[:80]!r}, which is not a file: this server reads only "
                f"Label Studio's files ({_FILES}) with its API key.",
            )
        return target

    def _body(self, r: Any, url: str) -> bytes:
        """The bytes of a 200 response, within ``max_bytes``."""
        from grounded_sam.serve.limits import PayloadTooLarge

        path = urlsplit(url).path
        if r.status_code != 200:
            raise LabelStudioError(
                f"Label Studio answered {r.status_code} for {path[:80]} (check "
                "LABEL_STUDIO_API_KEY and that the task and its storage still exist).",
                status=502,
            )
        chunks, size = [], 0
        for chunk in r.iter_bytes():
            size += len(chunk)
            if size > self.max_bytes:
                raise PayloadTooLarge(
                    f"The task image is over the server's limit of {self.max_bytes:,} bytes."
                )
            chunks.append(chunk)
        return b"".join(chunks)
