"""Bounds on what one request may send: body bytes (413) and image pixels (422).

* :class:`BodyLimit` (ASGI middleware) refuses a body over ``max_bytes``: at once when its
  ``Content-Length`` says so, else as soon as the bytes received pass the bound (a chunked
  upload is never read, spooled or parsed past it).
* :func:`decode_image` turns uploaded bytes into the engine's (H, W, 3) uint8 RGB array: the
  pixel count is read from the header and checked against the server's bound before any pixel
  is decoded (a decompression bomb is refused from its header), then
  :func:`grounded_sam.inputs.load_image` converts it (EXIF orientation, modes, the package's
  own :data:`~grounded_sam.limits.MAX_IMAGE_PIXELS` bound).

Thread safety: pure functions; the middleware keeps per-request state only.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import numpy as np

from grounded_sam import limits

__all__ = [
    "DEFAULT_MAX_IMAGE_PIXELS",
    "DEFAULT_MAX_UPLOAD_BYTES",
    "BodyLimit",
    "ImageRefused",
    "PayloadTooLarge",
    "decode_image",
]

logger = logging.getLogger(__name__)

#: Largest request body by default (an upload of a photo; the web app's bound too).
DEFAULT_MAX_UPLOAD_BYTES = 20 * 1024 * 1024
#: Most pixels of an uploaded image by default (4096 x 4096).
DEFAULT_MAX_IMAGE_PIXELS = 4096 * 4096

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class PayloadTooLarge(Exception):
    """The request body (or a fetched image) is larger than the server accepts (HTTP 413)."""


class ImageRefused(ValueError):
    """Not an image, or one with more pixels than the server accepts (HTTP 422)."""


def _mib(n: int) -> str:
    return f"{n / 1024**2:.1f} MiB" if n >= 1024**2 else f"{n:,} bytes"


def too_large_message(max_bytes: int) -> str:
    """The 413 message: the bound and what to do."""
    return (
        f"The request body is larger than this server's limit of {_mib(max_bytes)}: send a "
        "smaller (downscaled or recompressed) image, or start the server with a larger "
        "--max-upload-mb."
    )


class BodyLimit:
    """ASGI middleware: a request body over ``max_bytes`` is answered 413 ``{"error": ...}``.

    Args:
        app: The ASGI app.
        max_bytes: Largest body accepted.
    """

    def __init__(self, app: Callable[..., Awaitable[None]], max_bytes: int) -> None:
        self.app = app
        self.max_bytes = int(max_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one connection event, counting the body's bytes."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or ()).get(b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                declared = -1
            if declared > self.max_bytes:
                await _send_error(send, 413, too_large_message(self.max_bytes))
                return
        seen = 0
        started = responded = False

        async def counted() -> Message:
            # Past the bound: answer 413 now and tell the app the client went away (it stops
            # reading; whatever it answers then is dropped). Raising here would not do: a
            # body parser may turn any exception into its own 400.
            nonlocal seen, responded
            if responded:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    responded = True
                    if not started:
                        await _send_error(send, 413, too_large_message(self.max_bytes))
                    return {"type": "http.disconnect"}
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            if responded and not started:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except Exception:
            if not responded:
                raise
            logger.debug("Request body over the bound; the app stopped with", exc_info=True)


async def _send_error(send: Send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def decode_image(data: bytes, *, max_pixels: int, name: str = "the upload") -> np.ndarray:
    """Decode an uploaded image to (H, W, 3) uint8 RGB, refusing one over ``max_pixels``.

    Args:
        data: The file's bytes.
        max_pixels: Most pixels (width x height) accepted; checked from the header, before
            decoding.
        name: How to call the image in messages (never a server path).

    Returns:
        (H, W, 3) uint8 RGB array (EXIF orientation applied).

    Raises:
        ImageRefused: Empty, not an image, corrupt, or too many pixels (the message says
            which and what to do).
    """
    from PIL import Image, UnidentifiedImageError

    from grounded_sam.inputs import load_image

    if not data:
        raise ImageRefused(f"{name} is empty: send an image file (JPEG, PNG, WebP, ...).")
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
            if width * height > max_pixels or max(width, height) > limits.MAX_IMAGE_SIDE:
                raise ImageRefused(
                    f"{name} is {width}x{height} px ({width * height:,} pixels); this server "
                    f"accepts at most {max_pixels:,} pixels and {limits.MAX_IMAGE_SIDE} px "
                    "per side: downscale it (or start the server with a larger "
                    "--max-image-pixels)."
                )
            img.load()
            return load_image(img)
    except ImageRefused:
        raise
    except Image.DecompressionBombError:
        raise ImageRefused(
            f"{name} has too many pixels to decode safely (a decompression bomb); this "
            f"server accepts at most {max_pixels:,} pixels."
        ) from None
    except UnidentifiedImageError:
        raise ImageRefused(
            f"{name} is not an image that can be read: send a JPEG, PNG, WebP, BMP, GIF or "
            "TIFF file."
        ) from None
    except (OSError, SyntaxError, ValueError) as exc:
        text = " ".join(str(exc).split()).replace("the PIL image", name)
        raise ImageRefused(
            f"{name} could not be decoded ({text}); the file is probably truncated or corrupt."
        ) from None
