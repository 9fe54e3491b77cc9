"""Many clients at once, a bounded store over hundreds of images, batched encodes."""

from __future__ import annotations

import dataclasses
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from fastapi.testclient import TestClient

from grounded_sam.export.records import detections_to_json
from grounded_sam.serve.app import create_app
from grounded_sam.serve.engine import ServeEngine, content_id
from tests.serve.conftest import SlowEngine, assert_error, scene, upload

CLIENTS = 20


def test_concurrent_clients_each_get_their_own_images_results(tiny_gs) -> None:
    eng = ServeEngine(tiny_gs, index_cache_bytes=512 * 1024**2)
    images = [scene(32 + i, 40 + 2 * i, seed=100 + i) for i in range(CLIENTS)]
    try:
        with TestClient(create_app(eng)) as c:

            def call(i: int) -> dict:
                r = c.post("/v1/segment", files=upload(images[i], f"img{i}.png"),
                           data={"prompt": "disc, square", "top_k": "3"})  # fmt: skip
                assert r.status_code == 200, r.text
                return r.json()

            with ThreadPoolExecutor(CLIENTS) as pool:  # all 20 in flight together
                docs = list(pool.map(call, range(CLIENTS)))
        assert eng.pending == 0 and len(eng.store) == CLIENTS
        models = {"sam": tiny_gs.model_ids[0], "clip": tiny_gs.model_ids[1]}
        for image, doc in zip(images, docs, strict=True):
            h, w = image.shape[:2]
            assert (doc["width"], doc["height"]) == (w, h)
            assert doc["index_id"] == content_id(image)
            index = eng.store.get(doc["index_id"])
            dets = tiny_gs.query(index, "disc, square", top_k=3)
            want = detections_to_json(dets, (h, w), prompt="disc, square",
                                      phrases=["disc", "square"], models=models)  # fmt: skip
            assert {k: v for k, v in doc.items() if k != "index_id"} == want
        assert sum(d["num_instances"] for d in docs) >= CLIENTS  # non-trivial answers
    finally:
        eng.close()


class _CheapIndex:
    """The tiny engine, except that ``index`` copies one real index onto the new pixels.

    Everything else (the server, the worker, the store and its byte accounting) is real; only
    the model work of 300 index builds is skipped, to keep the test fast.
    """

    def __init__(self, gs, base) -> None:
        self._gs = gs
        self._base = base
        self.builds = 0

    def index(self, image, **kwargs):
        self.builds += 1
        assert image.shape == self._base.image.shape
        return dataclasses.replace(self._base, image=image.copy())

    def __getattr__(self, name):
        return getattr(self._gs, name)


def test_memory_stays_bounded_over_300_index_requests(tiny_gs) -> None:
    base = tiny_gs.index(scene(24, 24, seed=7))
    one = base.nbytes
    bound = 5 * one + one // 2  # room for five indexes
    cheap = _CheapIndex(tiny_gs, base)
    eng = ServeEngine(cheap, index_cache_bytes=bound)
    rng = np.random.default_rng(0)
    ids = []
    try:
        c = TestClient(create_app(eng))
        for _ in range(300):
            image = rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)
            r = c.post("/v1/index", files=upload(image))
            assert r.status_code == 200, r.text
            ids.append(r.json()["index_id"])
            assert eng.store.nbytes <= bound and len(eng.store) <= 5
        assert cheap.builds == 300 and len(set(ids)) == 300
        assert eng.store.keys() == ids[-5:]  # least recently used evicted
        assert_error(c.post("/v1/query", json={"index_id": ids[0], "prompt": "x"}), 404,
                     "evicted", "/v1/index again")  # fmt: skip
        r = c.post("/v1/query", json={"index_id": ids[-1], "prompt": "x"})
        assert r.status_code == 200, r.text
    finally:
        eng.close()


def test_queued_index_builds_share_one_encoder_call(
    tiny_gs, monkeypatch: pytest.MonkeyPatch
) -> None:
    slow = SlowEngine(tiny_gs)
    eng = ServeEngine(slow, batch_size=4)
    calls: list[int] = []
    real = tiny_gs.predictor.encode_batch

    def spy(images):
        calls.append(len(images))
        return real(images)

    monkeypatch.setattr(tiny_gs.predictor, "encode_batch", spy)
    images = [scene(32, 32, seed=s) for s in (20, 21, 22, 23)]
    try:
        with TestClient(create_app(eng)) as c:
            results: dict[int, dict] = {}

            def index(i: int) -> None:
                results[i] = c.post("/v1/index", files=upload(images[i])).json()

            first = threading.Thread(target=index, args=(0,))
            first.start()
            assert slow.started.wait(30)  # the worker is busy with image 0
            rest = [threading.Thread(target=index, args=(i,)) for i in (1, 2, 3)]
            for t in rest:
                t.start()
            deadline = threading.Event()
            while eng.pending < 4 and not deadline.wait(0.05):
                pass
            slow.release.set()
            for t in [first, *rest]:
                t.join(60)
        # image 0 alone (encode() is encode_batch([image])), then images 1-3, queued while the
        # worker was busy, in one encoder call
        assert calls == [1, 3]
        assert eng.batches == 1
        for i, image in enumerate(images):
            assert results[i]["built"] and results[i]["index_id"] == content_id(image)
            stored = eng.store.get(results[i]["index_id"])
            alone = tiny_gs.predictor.encode(image)
            np.testing.assert_allclose(
                stored.embedding.embeddings.float().numpy(),
                alone.embeddings.float().numpy(),
                atol=1e-4,
            )
    finally:
        slow.release.set()
        eng.close()
