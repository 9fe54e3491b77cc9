"""The REST routes in process: the CLI's JSON, the index store, OpenAPI, derived options."""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from grounded_sam.export.records import detections_to_json
from grounded_sam.grounding.options import query_fields
from grounded_sam.serve.engine import content_id
from grounded_sam.serve.limits import decode_image
from tests.serve.conftest import assert_error, png, scene, upload

PROMPT = "disc, square"


def _without_id(doc: dict) -> dict:
    return {k: v for k, v in doc.items() if k != "index_id"}


def test_health_and_models(client, tiny_gs) -> None:
    health = client.get("/health").json()
    assert health["status"] == "UP" and health["model_version"].startswith("grounded-sam-")
    info = client.get("/v1/models").json()
    assert info["device"] == "cpu" and info["dtype"] == "float32"
    assert info["models"]["sam"] == tiny_gs.model_ids[0]
    assert info["models"]["clip"] == tiny_gs.model_ids[1]
    assert info["default_options"] == tiny_gs.options.to_dict()
    assert info["worker"]["batch_size"] == 1 and "nothing" in info["worker"]["batched"]


def test_segment_returns_what_the_cli_writes(client, tiny_gs) -> None:
    image = scene(48, 64, seed=1)
    r = client.post("/v1/segment", files=upload(image), data={"prompt": PROMPT})
    assert r.status_code == 200, r.text
    doc = r.json()
    decoded = decode_image(png(image), max_pixels=10**6)
    assert doc["index_id"] == content_id(decoded)
    # the reference: the engine called in process, turned into JSON by the CLI's function
    dets = tiny_gs.segment(decoded, PROMPT)
    assert len(dets) >= 1  # random weights with threshold 0 still find regions
    want = detections_to_json(
        dets, decoded.shape[:2], prompt=PROMPT, phrases=["disc", "square"],
        models={"sam": tiny_gs.model_ids[0], "clip": tiny_gs.model_ids[1]},
    )  # fmt: skip
    assert _without_id(doc) == want
    assert (doc["width"], doc["height"]) == (64, 48) and doc["num_instances"] == len(dets)
    first = doc["instances"][0]
    assert first["mask"]["size"] == [48, 64]
    assert mask_utils.decode(first["mask"]).sum() == first["area"]


def test_segment_takes_query_options_as_form_fields(client, tiny_gs) -> None:
    image = scene(48, 64, seed=1)
    knobs = {"threshold": 0.6, "top_k": 1, "calibration": "per_phrase", "keep_parts": True,
             "negative": "background"}  # fmt: skip
    form = {"prompt": PROMPT, **{k: str(v).lower() for k, v in knobs.items()}}
    r = client.post("/v1/segment", files=upload(image), data=form)
    assert r.status_code == 200, r.text
    dets = tiny_gs.segment(image, PROMPT, **knobs)
    want = detections_to_json(
        dets, (48, 64), prompt=PROMPT, phrases=["disc", "square"],
        models={"sam": tiny_gs.model_ids[0], "clip": tiny_gs.model_ids[1]},
    )  # fmt: skip
    assert _without_id(r.json()) == want
    loose = client.post("/v1/segment", files=upload(image), data={"prompt": PROMPT}).json()
    assert loose["num_instances"] >= 1 and loose != r.json()  # the knobs changed the answer


def test_polygon_format(client) -> None:
    image = scene(48, 64, seed=1)
    r = client.post(
        "/v1/segment", files=upload(image), data={"prompt": PROMPT, "format": "polygon"}
    )
    doc = r.json()
    assert doc["num_instances"] >= 1
    for inst in doc["instances"]:
        assert inst["mask"] is None and inst["polygons"]
        x1, y1, x2, y2 = inst["box"]
        pts = np.concatenate([np.asarray(p) for p in inst["polygons"]])
        assert pts.shape[1] == 2
        assert (pts[:, 0] >= x1 - 1).all() and (pts[:, 0] <= x2).all()
        assert (pts[:, 1] >= y1 - 1).all() and (pts[:, 1] <= y2).all()


def test_index_once_then_query_predict_everything(client, engine, tiny_gs) -> None:
    image = scene(40, 56, seed=2)
    first = client.post("/v1/index", files=upload(image)).json()
    again = client.post("/v1/index", files=upload(image, "copy.png")).json()
    assert first["built"] is True and again["built"] is False
    key = first["index_id"]
    assert again["index_id"] == key == content_id(image)
    assert (first["width"], first["height"]) == (56, 40) and first["regions"] >= 1
    stored = engine.store.get(key)

    r = client.post("/v1/query", json={"index_id": key, "prompt": "disc", "threshold": 0.0})
    assert r.status_code == 200, r.text
    want = detections_to_json(
        tiny_gs.query(stored, "disc", threshold=0.0), (40, 56), prompt="disc",
        phrases=["disc"], models={"sam": tiny_gs.model_ids[0], "clip": tiny_gs.model_ids[1]},
    )  # fmt: skip
    assert _without_id(r.json()) == want and want["num_instances"] >= 1

    r = client.post("/v1/predict", json={"index_id": key, "points": [[20, 15]], "labels": [1]})
    doc = r.json()
    assert r.status_code == 200 and doc["num_instances"] == 3  # whole / part / sub-part
    assert {i["label"] for i in doc["instances"]} == {"prompt"}
    r = client.post("/v1/predict", json={"index_id": key, "box": [5, 5, 40, 30],
                                         "multimask_output": False})  # fmt: skip
    assert r.json()["num_instances"] == 1

    knobs = {"points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}
    r = client.post("/v1/everything", json={"index_id": key, **knobs})
    doc = r.json()
    assert r.status_code == 200 and doc["num_masks"] >= 1
    assert doc["settings"] == knobs
    assert {"segmentation", "bbox", "predicted_iou", "stability_score"} <= set(doc["masks"][0])


def test_unknown_index_is_404_saying_to_index_again(client) -> None:
    for route, body in [
        ("/v1/query", {"index_id": "nope", "prompt": "cat"}),
        ("/v1/predict", {"index_id": "nope", "points": [[1, 1]]}),
        ("/v1/everything", {"index_id": "nope"}),
    ]:
        assert_error(client.post(route, json=body), 404, "/v1/index again")


def test_openapi_documents_every_route_and_derived_field(client) -> None:
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    for path in (
        "/health",
        "/v1/models",
        "/v1/segment",
        "/v1/index",
        "/v1/query",
        "/v1/predict",
        "/v1/everything",
        "/setup",
        "/predict",
        "/webhook",
    ):
        assert path in spec["paths"], path  # fmt: skip
    form = spec["paths"]["/v1/segment"]["post"]["requestBody"]["content"]["multipart/form-data"]
    props = form["schema"]["properties"]
    knobs = {f.name for f in query_fields()}
    assert knobs | {"image", "prompt", "format"} == set(props)
    assert "calibrated CLIP probability" in props["threshold"]["description"]
    query = spec["components"]["schemas"]["QueryRequest"]["properties"]
    assert knobs | {"index_id", "prompt", "format"} == set(query)


def test_a_new_query_knob_reaches_the_request_schemas(monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses
    import importlib

    from grounded_sam.grounding import options as options_module
    from grounded_sam.grounding.options import QueryOptions
    from grounded_sam.serve import schemas

    extended = dataclasses.make_dataclass(
        "Extended",
        [("max_overlap", "float", dataclasses.field(default=0.25, metadata={
            "help": "a new knob", "cli": "--max-overlap", "per_image": False,
            "group": "grounding", "choices": None, "metavar": None}))],
        bases=(QueryOptions,),
        frozen=True,
    )  # fmt: skip
    monkeypatch.setattr(options_module, "query_fields", lambda: iter(dataclasses.fields(extended)))
    try:
        fresh = importlib.reload(schemas)
        assert "max_overlap" in fresh.QueryRequest.model_fields
        assert "a new knob" in fresh.SegmentForm.model_fields["max_overlap"].description
        with pytest.raises(Exception, match="max_overlap"):
            fresh.QueryRequest.model_validate({"index_id": "x", "max_overlap": "lots"})
    finally:
        monkeypatch.undo()
        importlib.reload(schemas)
