"""The Label Studio ML backend routes, with recorded Label Studio requests and a fake LS host."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from pycocotools import mask as mask_utils

from grounded_sam.serve.app import create_app
from grounded_sam.serve.brush import rle_to_mask
from grounded_sam.serve.labelstudio import ImageSource, parse_label_config
from tests.serve.conftest import assert_error, png, scene, upload

IMAGE = scene(48, 64, seed=1)
BRUSH_CONFIG = """<View>
  <Image name="image" value="$image" zoom="true"/>
  <BrushLabels name="tag" toName="image">
    <Label value="Disc" hint="disc" background="#FFA39E"/>
    <Label value="Square" alias="square"/>
  </BrushLabels>
</View>"""
POLYGON_CONFIG = BRUSH_CONFIG.replace("BrushLabels", "PolygonLabels")
PROMPT_CONFIG = BRUSH_CONFIG.replace(
    "</View>", '<TextArea name="prompt" toName="image" editable="true"/></View>'
)


def ls_request(config: str, url: str, context: dict | None = None, tasks: int = 1) -> dict:
    """A /predict body as Label Studio 1.x sends it (label_studio_ml/api.py's docstring)."""
    return {
        "tasks": [
            {
                "id": 7 + i,
                "data": {"image": url},
                "meta": {},
                "annotations": [],
                "predictions": [],
                "project": 1,
                "created_at": "2026-12-03T10:00:00Z",
            }
            for i in range(tasks)
        ],  # fmt: skip
        "model_version": None,
        "project": "1.1764756000",
        "label_config": config,
        "params": {"login": None, "password": None, "context": context},
    }


class FakeLabelStudio(BaseHTTPRequestHandler):
    """Serves /data/upload/1/photo.png to 'Token abc' or the refreshed 'Bearer access-1'."""

    seen: list[str] = []

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_POST(self) -> None:
        FakeLabelStudio.seen.append(f"POST {self.path}")
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        ok = self.path == "/api/token/refresh" and body == {"refresh": "aaa.bbb.ccc"}
        self._send(200 if ok else 401, json.dumps({"access": "access-1"} if ok else {}).encode())

    def do_GET(self) -> None:
        FakeLabelStudio.seen.append(f"GET {self.path} {self.headers.get('authorization')}")
        auth = self.headers.get("authorization")
        if self.path != "/data/upload/1/photo.png":
            self._send(404, b"not found")
        elif auth not in ("Token abc", "Bearer access-1"):
            self._send(401, b"no")
        else:
            self._send(200, png(IMAGE), "image/png")

    def _send(self, status: int, body: bytes, kind: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("content-type", kind)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def fake_ls():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeLabelStudio)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def backend(engine, **source) -> TestClient:
    return TestClient(create_app(engine, label_studio=ImageSource(**source)))


def test_the_labeling_config_gives_the_tag_and_the_phrases() -> None:
    config = parse_label_config(PROMPT_CONFIG)
    assert config.images == {"image": "image"}
    (tag,) = config.tags
    assert (tag.kind, tag.from_name, tag.to_name) == ("brushlabels", "tag", "image")
    assert tag.labels == (("Disc", "disc"), ("Square", "square"))  # hint, then alias
    assert parse_label_config(POLYGON_CONFIG).tag.kind == "polygonlabels"
    for bad, words in [
        ("<View><Image name='i' value='$i'/></View>", "no BrushLabels"),
        ("<View><unclosed></View>", "not valid XML"),
        ("", "missing"),
    ]:
        with pytest.raises(ValueError, match=words):
            parse_label_config(bad)  # fmt: skip


def test_health_setup_and_webhook(engine) -> None:
    c = backend(engine)
    assert c.get("/health").json()["status"] == "UP"
    r = c.post(
        "/setup",
        json={
            "project": "1.1764756000",
            "schema": BRUSH_CONFIG,
            "hostname": "http://localhost:8080",
            "access_token": "x",
        },
    )
    assert r.status_code == 200 and r.json() == {"model_version": engine.model_version}
    assert_error(c.post("/setup", json={"project": "1.1", "schema": "<View/>"}), 422, "Brush")
    r = c.post("/webhook", json={"action": "ANNOTATION_CREATED", "project": {"id": 1}})
    assert r.status_code == 200 and r.json()["status"] == "ok"


def _segment_masks(client, prompt: str) -> dict[tuple[str, bytes], float]:
    doc = client.post("/v1/segment", files=upload(IMAGE), data={"prompt": prompt}).json()
    assert doc["num_instances"] >= 1
    return {
        (i["label"], mask_utils.decode(i["mask"]).astype(bool).tobytes()): i["confidence"]
        for i in doc["instances"]
    }


def test_predict_brushlabels_from_the_config_labels(engine, fake_ls, client) -> None:
    c = backend(engine, url=fake_ls, api_key="abc")
    r = c.post("/predict", json=ls_request(BRUSH_CONFIG, "/data/upload/1/photo.png"))
    assert r.status_code == 200, r.text
    body = r.json()
    (prediction,) = body["results"]
    assert prediction["model_version"] == body["model_version"] == engine.model_version
    results = prediction["result"]
    assert results and prediction["score"] == pytest.approx(np.mean([x["score"] for x in results]))
    want = _segment_masks(client, "disc, square")
    rename = {"disc": "Disc", "square": "Square"}
    got = {}
    for x in results:
        assert (x["type"], x["from_name"], x["to_name"]) == ("brushlabels", "tag", "image")
        assert (x["original_width"], x["original_height"]) == (64, 48)
        assert x["value"]["format"] == "rle"
        mask = rle_to_mask(x["value"]["rle"], 48, 64)
        got[(x["value"]["brushlabels"][0], mask.tobytes())] = x["score"]
    assert got == {(rename[label], m): s for (label, m), s in want.items()}


def test_predict_polygonlabels_in_percent(engine, tmp_path: Path) -> None:
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "photo.png").write_bytes(png(IMAGE))
    c = backend(engine, local_root=tmp_path)
    r = c.post("/predict", json=ls_request(POLYGON_CONFIG, "/data/local-files/?d=imgs/photo.png"))
    assert r.status_code == 200, r.text
    results = r.json()["results"][0]["result"]
    assert results
    for x in results:
        assert x["type"] == "polygonlabels" and x["value"]["polygonlabels"][0] in ("Disc", "Square")
        pts = np.asarray(x["value"]["points"])
        assert pts.shape[1] == 2 and len(pts) >= 3
        assert (pts >= 0).all() and (pts <= 100).all()
    outside = ls_request(POLYGON_CONFIG, "/data/local-files/?d=../../etc/passwd")
    assert_error(c.post("/predict", json=outside), 422, "outside")


def test_interactive_text_prompt_and_clicks(engine, fake_ls) -> None:
    c = backend(engine, url=fake_ls, api_key="abc")
    text = {
        "result": [
            {
                "type": "textarea",
                "from_name": "prompt",
                "to_name": "image",
                "value": {"text": ["square, yellow thing"]},
                "origin": "manual",
            }
        ]
    }
    r = c.post("/predict", json=ls_request(PROMPT_CONFIG, "/data/upload/1/photo.png", text))
    results = r.json()["results"][0]["result"]
    assert results and {x["value"]["brushlabels"][0] for x in results} <= {"Square", "yellow thing"}
    click = {
        "result": [
            {
                "type": "keypointlabels",
                "original_width": 64,
                "original_height": 48,
                "is_positive": True,
                "value": {"x": 30.0, "y": 25.0, "width": 0.5, "keypointlabels": ["Disc"]},
            }
        ]
    }
    r = c.post("/predict", json=ls_request(BRUSH_CONFIG, "/data/upload/1/photo.png", click))
    (x,) = r.json()["results"][0]["result"]  # the best of SAM's three masks
    assert x["value"]["brushlabels"] == ["Disc"] and rle_to_mask(x["value"]["rle"], 48, 64).any()


def test_images_come_only_from_label_studio_with_its_key(engine, fake_ls) -> None:
    FakeLabelStudio.seen.clear()
    c = backend(engine, url=fake_ls, api_key="abc")
    for url in (
        "http://example.com/photo.png",
        "http://127.0.0.1:1/data/upload/1/photo.png",
        "file:///etc/passwd",
        "data:image/png;base64,AAAA",
    ):
        assert_error(c.post("/predict", json=ls_request(BRUSH_CONFIG, url)), 422)  # fmt: skip
    assert FakeLabelStudio.seen == []  # nothing was fetched
    absolute = ls_request(BRUSH_CONFIG, f"{fake_ls}/data/upload/1/photo.png")
    assert c.post("/predict", json=absolute).status_code == 200
    wrong = backend(engine, url=fake_ls, api_key="nope")
    assert_error(wrong.post("/predict", json=absolute), 502, "401", "LABEL_STUDIO_API_KEY")
    jwt = backend(engine, url=fake_ls, api_key="aaa.bbb.ccc")  # a personal access token
    assert jwt.post("/predict", json=absolute).status_code == 200
    assert "POST /api/token/refresh" in FakeLabelStudio.seen
    assert FakeLabelStudio.seen[-1].endswith("Bearer access-1")
    unset = backend(engine)
    assert_error(unset.post("/predict", json=absolute), 422, "LABEL_STUDIO_URL")
    gone = backend(engine, url="http://127.0.0.1:9", api_key="abc")
    assert_error(gone.post("/predict", json=ls_request(BRUSH_CONFIG, "/data/upload/1/x.png")),
                 502, "Could not reach")  # fmt: skip


def test_bad_label_studio_requests_are_4xx_json(engine, fake_ls) -> None:
    c = backend(engine, url=fake_ls, api_key="abc")
    ok_url = "/data/upload/1/photo.png"
    assert_error(c.post("/predict", json={"tasks": []}), 422, "no tasks")
    bad_config = {**ls_request(BRUSH_CONFIG, ok_url), "label_config": "<x"}
    assert_error(c.post("/predict", json=bad_config), 422, "XML")
    no_key = ls_request(BRUSH_CONFIG, ok_url)
    no_key["tasks"][0]["data"] = {"picture": ok_url}
    assert_error(c.post("/predict", json=no_key), 422, "data['image']")
    assert_error(c.post("/predict", content=b"[1,", headers={"content-type": "application/json"}),
                 422, "JSON")  # fmt: skip
    # several tasks: one unreadable image gives that task an empty prediction, not a failure
    two = ls_request(BRUSH_CONFIG, ok_url, tasks=2)
    two["tasks"][1]["data"]["image"] = "/data/upload/1/missing.png"
    r = c.post("/predict", json=two)
    assert r.status_code == 200
    first, second = r.json()["results"]
    assert first["result"] and second["result"] == []
