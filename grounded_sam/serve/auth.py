"""The API key: required on every route but ``/health`` when the server has one.

A client sends the key in one of three ways (all compared in constant time):

* ``Authorization: Bearer KEY`` (scripts, ``curl -H``);
* ``X-API-Key: KEY`` (or ``Token: KEY``, what X-AnyLabeling's remote-server model sends);
* HTTP Basic auth with the key as the password and any user name: what Label Studio sends
  when its ML backend connection has "basic auth" set, and what a browser asks for on
  ``/docs`` (the 401 carries ``WWW-Authenticate: Basic``).

The key comes from ``--api-key`` or the ``GROUNDED_SAM_API_KEY`` environment variable (which
keeps it out of the process list). This is the only authentication the server has; put it
behind a TLS proxy before exposing it beyond a trusted network.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from collections.abc import Awaitable, Callable, Iterable

from grounded_sam.serve.limits import Receive, Scope, Send

__all__ = ["ENV_API_KEY", "OPEN_PATHS", "ApiKey", "key_of"]

#: Environment variable holding the key (``--api-key`` overrides it).
ENV_API_KEY = "GROUNDED_SAM_API_KEY"
#: Routes answered without a key (liveness checks, Label Studio's connection test).
OPEN_PATHS = frozenset({"/health"})


def key_of(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The key a request carries (Bearer, X-API-Key or Basic password), or None."""
    found = {k.lower(): v for k, v in headers}
    api_key = found.get(b"x-api-key") or found.get(b"token")  # Token: X-AnyLabeling's header
    if api_key:
        return api_key.decode("latin-1")
    auth = found.get(b"authorization", b"").decode("latin-1").strip()
    scheme, _, value = auth.partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and value:
        return value
    if scheme.lower() == "basic" and value:
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[2] or None
    return None


class ApiKey:
    """ASGI middleware: 401 ``{"error": ...}`` unless the request carries the key.

    Args:
        app: The ASGI app.
        key: The key; empty or None lets every request through.
        open_paths: Paths answered without a key.
    """

    def __init__(
        self,
        app: Callable[..., Awaitable[None]],
        key: str | None,
        open_paths: Iterable[str] = OPEN_PATHS,
    ) -> None:
        self.app = app
        self._key = (key or "").encode("utf-8")
        self.open_paths = frozenset(open_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the key of an HTTP request, then pass it on."""
        if scope["type"] != "http" or not self._key or scope.get("path") in self.open_paths:
            await self.app(scope, receive, send)
            return
        given = key_of(scope.get("headers") or ())
        if given is not None and hmac.compare_digest(given.encode("utf-8"), self._key):
            await self.app(scope, receive, send)
            return
        message = (
            "Missing API key: send 'Authorization: Bearer KEY' or 'X-API-Key: KEY' (the "
            "server's --api-key / $GROUNDED_SAM_API_KEY)."
            if given is None
            else "Wrong API key: send the key the server was started with."
        )
        body = json.dumps({"error": message}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", b'Basic realm="grounded-sam", charset="UTF-8"'),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
