"""Query options of Label Studio requests: extra params, model_* tag attributes, params."""

from __future__ import annotations

from pathlib import Path

import pytest
from pycocotools import mask as mask_utils

from grounded_sam.grounding.options import QueryOptions
from grounded_sam.serve.brush import rle_to_mask
from grounded_sam.serve.labelstudio import parse_label_config
from grounded_sam.serve.labelstudio_options import ProjectParams, project_id, request_options
from grounded_sam.serve.schemas import parse_query_options
from tests.serve.conftest import assert_error, png, upload
from tests.serve.test_labelstudio import BRUSH_CONFIG, IMAGE, backend, ls_request

URL = "/data/local-files/?d=imgs/photo.png"


def tag_config(**attrs: str) -> str:
    extra = "".join(f' {k}="{v}"' for k, v in attrs.items())
    return BRUSH_CONFIG.replace(
        '<BrushLabels name="tag" toName="image"', f'<BrushLabels name="tag" toName="image"{extra}'
    )


@pytest.fixture()
def ls(engine, tmp_path: Path):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "photo.png").write_bytes(png(IMAGE))
    return backend(engine, local_root=tmp_path)


def segmented(client, **fields: str) -> dict[tuple[str, bytes], float]:
    """/v1/segment's masks and scores for the two labels' phrases with these options."""
    r = client.post("/v1/segment", files=upload(IMAGE), data={"prompt": "disc, square", **fields})
    assert r.status_code == 200, r.text
    return {
        (i["label"], mask_utils.decode(i["mask"]).astype(bool).tobytes()): i["confidence"]
        for i in r.json()["instances"]
    }


def predicted(response) -> dict[tuple[str, bytes], float]:
    assert response.status_code == 200, response.text
    return {
        (x["value"]["brushlabels"][0].lower(), rle_to_mask(x["value"]["rle"], 48, 64).tobytes()): x[
            "score"
        ]
        for x in response.json()["results"][0]["result"]
    }


def test_parse_query_options_is_the_v1_query_validation() -> None:
    base = QueryOptions()
    assert parse_query_options(None, base) is base and parse_query_options({}, base) is base
    assert parse_query_options({"threshold": 0.4, "top_k": 0}, base).top_k is None
    assert parse_query_options('{"top_k": 3}', base).top_k == 3
    text = parse_query_options({"threshold": "0.25", "keep_parts": "true"}, base, text=True)
    assert (text.threshold, text.keep_parts) == (0.25, True)
    for bad, words in [
        ({"threshold": 7}, "threshold"),
        ({"tresh": 1}, "unknown field 'tresh'"),
        ("[1, 2]", "JSON object"),
        ("{", "not valid JSON"),
        ({"top_k": "many"}, "top_k"),
    ]:
        with pytest.raises(ValueError, match=words) as info:
            parse_query_options(bad, base, what="the test's options")
        assert str(info.value).startswith("the test's options")
        assert "\n" not in str(info.value)


def test_sources_apply_in_order() -> None:
    base = QueryOptions()
    config = parse_label_config(tag_config(model_score_threshold="0.2", model_top_k="2"))
    assert config.tag.options == (("threshold", "0.2"), ("top_k", "2"))
    got = request_options(
        base,
        extra_params={"top_k": 1, "refine": 1, "threshold": 0.9},
        tag_options=config.tag.options,
        tag="tag",
        params={"login": None, "password": None, "context": None, "top_k": 3},
    )
    assert (got.threshold, got.top_k, got.refine) == (0.2, 3, 1)
    assert project_id("12.1764756000") == "12" and project_id(None) is None
    kept = ProjectParams(max_projects=2)
    for i in range(3):
        kept.set(f"{i}.1", {"top_k": i + 1}, base)
    assert kept.get("0.1") is None and kept.get("2.999") == {"top_k": 3}
    kept.set("2.1", None, base)
    assert kept.get("2.1") is None
    assert parse_label_config(tag_config(model_path="yolov8n.pt")).tag.options == ()


def test_extra_params_from_setup_change_predictions(ls, client) -> None:
    full = predicted(ls.post("/predict", json=ls_request(BRUSH_CONFIG, URL)))
    assert full == segmented(client) and full
    r = ls.post(
        "/setup",
        json={
            "project": "1.1764756000",
            "schema": BRUSH_CONFIG,
            "extra_params": {"calibration": "per_phrase"},
        },
    )
    assert r.status_code == 200, r.text
    got = predicted(ls.post("/predict", json=ls_request(BRUSH_CONFIG, URL)))
    assert got == segmented(client, calibration="per_phrase") and got != full
    other_project = {**ls_request(BRUSH_CONFIG, URL), "project": "2.1764756000"}
    assert predicted(ls.post("/predict", json=other_project)) == full
    forget = {"project": "1.1764756000", "schema": BRUSH_CONFIG, "extra_params": None}
    assert ls.post("/setup", json=forget).status_code == 200
    assert predicted(ls.post("/predict", json=ls_request(BRUSH_CONFIG, URL))) == full


def test_tag_attributes_and_request_params(ls, client) -> None:
    # the tiny models score their one region 0.18-0.19 ('joint') or 0.21-0.23 ('per_phrase')
    assert 0.15 < max(predicted(ls.post("/predict", json=ls_request(BRUSH_CONFIG, URL))).values())
    config = tag_config(model_score_threshold="0.204")
    assert predicted(ls.post("/predict", json=ls_request(config, URL))) == {}
    assert segmented(client, threshold="0.204") == {}
    body = ls_request(config, URL)
    body["params"]["calibration"] = "per_phrase"  # the request's params join the tag's
    got = predicted(ls.post("/predict", json=body))
    assert got and got == segmented(client, threshold="0.204", calibration="per_phrase")
    body["params"]["threshold"] = 0.9  # and win over it
    assert predicted(ls.post("/predict", json=body)) == {}


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (
            {"config": tag_config(model_score_threshold="1.5")},
            ["'tag' tag's model_* attributes", "threshold"],
        ),
        (
            {"config": tag_config(model_tresh="0.5")},
            ["model_tresh", "model_score_threshold", "top_k"],
        ),
        ({"params": {"top_k": -2}}, ["the request's params", "top_k"]),
        ({"params": {"negative": 5}}, ["the request's params", "negative"]),
    ],
)
def test_bad_options_are_422_with_where_they_came_from(ls, change, words) -> None:
    body = ls_request(change.get("config", BRUSH_CONFIG), URL, tasks=2)
    body["params"].update(change.get("params", {}))
    assert_error(ls.post("/predict", json=body), 422, *words)


def test_bad_extra_params_are_refused_at_setup(ls) -> None:
    for extra, words in [({"threshold": "high"}, "threshold"), ([0.3], "JSON object")]:
        r = ls.post(
            "/setup", json={"project": "3.1", "schema": BRUSH_CONFIG, "extra_params": extra}
        )
        assert_error(r, 422, "extra params", words)
    bad_tag = {"project": "3.1", "schema": tag_config(model_top_k="x")}
    assert_error(ls.post("/setup", json=bad_tag), 422, "model_* attributes", "top_k")
    assert_error(
        ls.post("/setup", json={"project": "3.1", "schema": tag_config(model_x="1")}),
        422,
        "model_x",
    )


def test_a_refused_setup_changes_nothing(ls, client) -> None:
    full = predicted(ls.post("/predict", json=ls_request(BRUSH_CONFIG, URL)))
    per_phrase = segmented(client, calibration="per_phrase")
    assert full and per_phrase != full
    body = {**ls_request(BRUSH_CONFIG, URL), "project": "4.1"}
    refused = {
        "project": "4.1",
        "schema": tag_config(model_top_k="x"),
        "extra_params": {"calibration": "per_phrase"},
    }
    assert_error(ls.post("/setup", json=refused), 422, "model_* attributes", "top_k")
    assert predicted(ls.post("/predict", json=body)) == full  # not kept
    good = {"project": "4.1", "schema": BRUSH_CONFIG, "extra_params": {"calibration": "per_phrase"}}
    assert ls.post("/setup", json=good).status_code == 200
    assert predicted(ls.post("/predict", json=body)) == per_phrase
    forget = {**refused, "extra_params": None}
    assert_error(ls.post("/setup", json=forget), 422, "model_* attributes")
    assert predicted(ls.post("/predict", json=body)) == per_phrase  # not forgotten


def test_kept_extra_params_are_small() -> None:
    base = QueryOptions()
    kept = ProjectParams()
    padded = '{"top_k": 3,' + " " * 200_000 + '"threshold": 0.30000000000000000000000000000000001}'
    kept.set("5.1", padded, base)
    assert kept.get("5.1") == {"top_k": 3, "threshold": 0.3}  # parsed, not the 200 kB text
    small = ProjectParams(max_bytes=64)
    small.set("6.1", {"negative": "shadow"}, base)
    many = {"negative": "shadow, reflection, glare, water, sky, cloud, smoke, haze, fog, dust"}
    with pytest.raises(ValueError, match=r"extra params .* are 8\d bytes of JSON.*limit is 64"):
        small.set("6.1", many, base)
    assert small.get("6.1") == {"negative": "shadow"}
