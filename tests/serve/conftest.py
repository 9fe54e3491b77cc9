"""Fixtures for the server tests: the tiny engine behind a ServeEngine, in-process clients."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("httpx")


def scene(h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    """A bright disc and a dark square on a noisy background, (H, W, 3) uint8."""
    rng = np.random.default_rng(seed)
    img = rng.integers(90, 140, (h, w, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:h, :w]
    img[(yy - h // 3) ** 2 + (xx - w // 3) ** 2 < (h // 5) ** 2] = (230, 180, 40)
    img[h // 2 : h // 2 + h // 4, w // 2 : w // 2 + w // 4] = (30, 30, 90)
    return img


def png(image: np.ndarray) -> bytes:
    """PNG bytes of an (H, W, 3) uint8 image."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def upload(image: np.ndarray, name: str = "photo.png") -> dict[str, Any]:
    """``files=`` of a multipart request with ``image``."""
    return {"image": (name, png(image), "image/png")}


class SlowEngine:
    """The tiny engine, except that ``index`` waits until ``release`` is set."""

    def __init__(self, gs: Any) -> None:
        self._gs = gs
        self.release = threading.Event()
        self.started = threading.Event()

    def index(self, image: np.ndarray, **kwargs: Any) -> Any:
        self.started.set()
        assert self.release.wait(60), "the test never released the slow index"
        return self._gs.index(image, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._gs, name)


@pytest.fixture(scope="module")
def engine(tiny_gs) -> Iterator[Any]:
    """A ServeEngine over the session's tiny engine (a 256 MiB index store)."""
    from grounded_sam.serve.engine import ServeEngine

    eng = ServeEngine(tiny_gs, index_cache_bytes=256 * 1024**2)
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def client(engine) -> Iterator[Any]:
    """An in-process client of the app (no API key, default bounds)."""
    from fastapi.testclient import TestClient

    from grounded_sam.serve.app import create_app

    with TestClient(create_app(engine)) as c:
        yield c


def assert_error(response: Any, status: int, *words: str) -> str:
    """The response is ``{"error": one line}`` with ``status`` and no traceback."""
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert set(body) == {"error"}, body
    message = body["error"]
    assert "Traceback" not in message and "\n" not in message and message
    for word in words:
        assert word.lower() in message.lower(), (word, message)
    return message
