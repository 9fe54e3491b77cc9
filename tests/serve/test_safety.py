"""Safe to expose: the API key, bounded uploads, 4xx JSON errors, /health never blocked."""

from __future__ import annotations

import base64
import json
import threading
import time

import pytest
from fastapi.testclient import TestClient

from grounded_sam.serve.app import create_app
from grounded_sam.serve.engine import ServeEngine
from tests.serve.conftest import SlowEngine, assert_error, png, scene, upload

KEY = "s3cret-key"
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def locked(engine):
    """A client of an app with an API key and small bounds (64 KiB, 4096 pixels)."""
    app = create_app(engine, api_key=KEY, max_upload_bytes=64 * 1024, max_image_pixels=4096)
    return TestClient(app)  # no `with`: the shared engine is not closed by this app


def test_every_route_but_health_needs_the_key(locked) -> None:
    assert locked.get("/health").status_code == 200
    for method, path in [
        ("get", "/v1/models"),
        ("get", "/docs"),
        ("get", "/openapi.json"),
        ("post", "/v1/segment"),
        ("post", "/v1/query"),
        ("post", "/setup"),
        ("post", "/predict"),
        ("post", "/webhook"),
        ("get", "/no-such-route"),
    ]:
        r = getattr(locked, method)(path)
        assert_error(r, 401, "API key")  # fmt: skip
        assert r.headers["www-authenticate"].startswith("Basic")
    assert_error(locked.get("/v1/models", headers={"X-API-Key": "wrong"}), 401, "wrong")
    basic = base64.b64encode(f"labelstudio:{KEY}".encode()).decode()
    for headers in (
        {"Authorization": f"Bearer {KEY}"},
        {"X-API-Key": KEY},
        {"Authorization": f"Basic {basic}"},
    ):
        assert locked.get("/v1/models", headers=headers).status_code == 200, headers  # fmt: skip


def test_uploads_are_bounded_in_bytes_and_pixels(locked) -> None:
    auth = {"X-API-Key": KEY}
    big = b"\0" * (65 * 1024)
    r = locked.post("/v1/index", headers=auth, files={"image": ("big.png", big, "image/png")})
    assert_error(r, 413, "--max-upload-mb")
    # no Content-Length (chunked): refused once the bytes received pass the bound
    chunks = (b"x" * 4096 for _ in range(40))
    r = locked.post("/v1/query", headers={**auth, "content-type": "application/json"},
                    content=chunks)  # fmt: skip
    assert_error(r, 413, "limit")
    r = locked.post("/v1/index", headers=auth, files=upload(scene(80, 80)))  # 6400 px > 4096
    assert_error(r, 422, "80x80", "--max-image-pixels")
    assert locked.post("/v1/index", headers=auth, files=upload(scene(48, 64))).status_code == 200


@pytest.mark.parametrize("side", [5000, 30000])
def test_a_decompression_bomb_is_refused_from_its_header(client, side: int) -> None:
    import zlib

    data = bytearray(png(scene(8, 8)))
    # claim side x side pixels in the IHDR chunk (with its CRC fixed): a few hundred bytes
    # that would decode to gigabytes
    data[16:24] = side.to_bytes(4, "big") * 2
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")
    r = client.post("/v1/index", files={"image": ("bomb.png", bytes(data), "image/png")})
    message = assert_error(r, 422)
    assert "pixels" in message and len(data) < 1000


@pytest.mark.parametrize(
    ("files", "data", "words"),
    [
        ({"image": ("x.png", b"hello, not an image", "image/png")}, {"prompt": "cat"},
         ["not an image"]),
        ({"image": ("x.png", b"", "image/png")}, {"prompt": "cat"}, ["empty"]),
        (None, {"prompt": "cat"}, ["multipart"]),
        ("image", {"prompt": "cat", "bogus": "1"}, ["unknown field", "bogus"]),
        ("image", {"prompt": "cat", "threshold": "1.5"}, ["threshold"]),
        ("image", {"prompt": "cat", "threshold": "high"}, ["threshold"]),
        ("image", {"prompt": "cat", "calibration": "loud"}, ["calibration"]),
        ("image", {"prompt": "cat", "refine": "99"}, ["refine"]),
        ("image", {"prompt": "cat", "exemplars": "[[1, 2, 3]]"}, ["exemplars"]),
        ("image", {"prompt": "cat", "exemplars": "not json"}, ["exemplars"]),
        ("image", {"prompt": "cat", "negative": "cat"}, ["negative"]),
        ("image", {"prompt": " , "}, ["empty"]),
        ("image", {}, ["Nothing to look for"]),
        ("image", {"prompt": "cat\x00dog"}, ["control character"]),
        ("image", {"prompt": ",".join(f"p{i}" for i in range(200))}, ["128 phrases"]),
        ("image", {"prompt": "x" * 400}, ["300"]),
        ("image", {"prompt": "cat", "format": "svg"}, ["format"]),
    ],
)  # fmt: skip
def test_bad_segment_requests_are_422_json(client, files, data, words) -> None:
    if files == "image":
        files = upload(scene(32, 32))
    if files is None:
        r = client.post("/v1/segment", data=data)
    else:
        r = client.post("/v1/segment", files=files, data=data)
    assert_error(r, 422, *words)


def test_bad_json_requests_are_422_json(client) -> None:
    key = client.post("/v1/index", files=upload(scene(32, 40, seed=5))).json()["index_id"]
    raw = {
        "content": b'{"index_id": "x", "prompt": ',
        "headers": {"content-type": "application/json"},
    }
    assert_error(client.post("/v1/query", **raw), 422, "JSON")
    cases = [
        ("/v1/query", {"index_id": key, "prompt": "cat", "bogus": 1}, ["bogus"]),
        ("/v1/query", {"index_id": key, "prompt": "\ud800"}, ["surrogate"]),
        ("/v1/query", {"index_id": key, "prompt": 7}, ["prompt"]),
        ("/v1/query", {"index_id": key, "prompt": "cat", "top_k": -3}, ["top_k"]),
        ("/v1/query", {"index_id": key, "prompt": "cat", "points": [[1000, 1000]]}, ["point"]),
        ("/v1/query", {"prompt": "cat"}, ["index_id"]),
        ("/v1/predict", {"index_id": key}, ["points"]),
        ("/v1/predict", {"index_id": key, "points": [[1, 2, 3]]}, ["points"]),
        ("/v1/predict", {"index_id": key, "box": [30, 30, 5, 5]}, ["box"]),
        ("/v1/everything", {"index_id": key, "points_per_side": 100000}, ["points_per_side"]),
        ("/v1/everything", {"index_id": key, "output_mode": "binary_mask"}, ["output_mode"]),
    ]
    for route, body, words in cases:
        r = client.post(route, content=json.dumps(body), headers=JSON)
        assert_error(r, 422, *words)
    assert_error(client.get("/v1/nothing"), 404)
    assert_error(client.get("/v1/query"), 405)


class _Broken:
    def __init__(self, gs):
        self._gs = gs

    def index(self, image, **kwargs):
        raise RuntimeError("a bug deep inside torch")

    def __getattr__(self, name):
        return getattr(self._gs, name)


def test_a_bug_is_a_500_without_the_traceback(tiny_gs) -> None:
    eng = ServeEngine(_Broken(tiny_gs))
    try:
        c = TestClient(create_app(eng), raise_server_exceptions=False)
        message = assert_error(c.post("/v1/index", files=upload(scene(32, 32))), 500)
        assert "RuntimeError" in message and "deep inside" not in message
    finally:
        eng.close()


def test_a_slow_request_never_blocks_health_and_the_queue_is_bounded(tiny_gs) -> None:
    slow = SlowEngine(tiny_gs)
    eng = ServeEngine(slow, max_queue=1)
    app = create_app(eng)
    done: dict = {}
    try:
        with TestClient(app) as c:

            def index() -> None:
                done["response"] = c.post("/v1/index", files=upload(scene(32, 32, seed=9)))

            worker = threading.Thread(target=index)
            worker.start()
            assert slow.started.wait(30)  # the model call is running (and will not finish)
            t0 = time.perf_counter()
            health = c.get("/health")
            assert health.status_code == 200 and health.json()["pending"] == 1
            assert time.perf_counter() - t0 < 5
            assert c.get("/v1/models").status_code == 200  # no model call either
            assert_error(c.post("/v1/index", files=upload(scene(32, 32))), 503, "busy")
            assert "response" not in done
            slow.release.set()
            worker.join(60)
        assert done["response"].status_code == 200
        assert done["response"].json()["built"] is True
    finally:
        slow.release.set()
        eng.close()
