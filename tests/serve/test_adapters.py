"""The X-AnyLabeling remote-server routes (grounded_sam.serve.adapters), in process."""

from __future__ import annotations

import base64

import pytest

from tests.serve.conftest import assert_error, png, scene, upload


def _body(image, **params) -> dict:
    data = base64.b64encode(png(image)).decode()
    return {"model": "grounded-sam", "image": f"data:image/png;base64,{data}", "params": params}


def test_model_list_has_the_shape_x_anylabeling_reads(client) -> None:
    r = client.get("/x-anylabeling/v1/models")
    assert r.status_code == 200
    body = r.json()
    assert body["success"] is True and list(body["data"]) == ["grounded-sam"]
    model = body["data"]["grounded-sam"]
    assert model["batch_processing_mode"] == "text_prompt"
    assert {"edit_text", "button_send", "edit_conf"} <= {w["name"] for w in model["widgets"]}
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/x-anylabeling/v1/models", "/x-anylabeling/v1/predict"} <= set(paths)


def test_predict_gives_the_polygons_of_v1_segment(client) -> None:
    image = scene(48, 64, seed=2)
    ref = client.post(
        "/v1/segment",
        files=upload(image),
        data={"prompt": "disc, square", "format": "polygon", "threshold": "0.1"},
    )
    assert ref.status_code == 200, ref.text
    want = [
        (inst["label"], i + 1, poly, inst["confidence"])
        for i, inst in enumerate(ref.json()["instances"])
        for poly in inst["polygons"]
        if len(poly) >= 3
    ]
    assert want, "the reference should find something"
    # the "person.car" style of X-AnyLabeling's grounding models: periods separate phrases
    r = client.post(
        "/x-anylabeling/v1/predict",
        json=_body(image, text_prompt="disc.square", conf_threshold=0.1),
    )
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    got = [(s["label"], s["group_id"], s["points"], s["score"]) for s in data["shapes"]]
    assert got == want
    assert {s["shape_type"] for s in data["shapes"]} == {"polygon"} and data["description"] == ""
    raw = _body(image, text_prompt="disc, square", conf_threshold=0.1)
    raw["image"] = raw["image"].partition(",")[2]  # raw base64 without the data: prefix
    assert client.post("/x-anylabeling/v1/predict", json=raw).json()["data"] == data


@pytest.mark.parametrize(
    ("change", "status", "words"),
    [
        ({"params": {}}, 422, "text prompt"),
        ({"params": {"text_prompt": "disc", "conf_threshold": 7}}, 422, "threshold"),
        ({"model": "yolo11n"}, 422, "unknown model"),
        ({"image": "data:image/png;base64,@@@"}, 422, "base64"),
        ({"image": base64.b64encode(b"not an image").decode()}, 422, "image"),
    ],
)
def test_bad_requests_are_one_line_errors(client, change, status, words) -> None:
    body = {**_body(scene(32, 32), text_prompt="disc"), **change}
    assert_error(client.post("/x-anylabeling/v1/predict", json=body), status, words)


def test_the_token_header_carries_the_api_key(engine) -> None:
    from fastapi.testclient import TestClient

    from grounded_sam.serve.app import create_app

    with TestClient(create_app(engine, api_key="k3y")) as c:
        assert c.get("/x-anylabeling/v1/models", headers={"Token": ""}).status_code == 401
        assert c.get("/x-anylabeling/v1/models", headers={"Token": "bad"}).status_code == 401
        assert c.get("/x-anylabeling/v1/models", headers={"Token": "k3y"}).status_code == 200
