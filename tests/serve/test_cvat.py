"""The CVAT serverless function (grounded_sam.serve.cvat) called as Nuclio calls it.

The Nuclio objects are stand-ins with the attributes of nuclio-sdk's ``Context`` (a
``user_data`` object, ``logger`` with ``debug/info/warn/error``, ``Response``) and ``Event``
(``body``: a dict for a JSON request, else bytes); the real nuclio-sdk classes are used too
when that package is installed. The handler string of the shipped function.yaml is resolved
the way Nuclio's Python wrapper resolves it.
"""

from __future__ import annotations

import base64
import json
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from grounded_sam.serve.cvat import CvatFunction, CvatLabel, cvat_mask, read_labels
from tests.serve.conftest import png, scene

IMAGE = scene(48, 64, seed=2)
SHIPPED = Path(__file__).resolve().parents[2] / "grounded_sam/serve/cvat_function/function.yaml"
SPEC = [
    {"id": 0, "name": "disc", "type": "mask"},
    {"id": 1, "name": "dark_square", "prompt": "square", "type": "mask"},
]
TINY_PROPOSALS = {"points_per_side": 8, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.5}


class FakeLogger:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def __getattr__(self, level: str):
        if level not in ("debug", "info", "warn", "error"):
            raise AttributeError(level)  # nuclio's logger has warn, not warning
        return lambda message, *args: self.lines.append((level, message))


class FakeResponse:
    def __init__(self, headers=None, body=None, content_type=None, status_code=200) -> None:
        self.headers, self.body = headers, body
        self.content_type, self.status_code = content_type, status_code


class FakeContext:
    def __init__(self) -> None:
        self.user_data = lambda: None  # as nuclio_sdk.Context sets it
        self.logger = FakeLogger()
        self.Response = FakeResponse


class FakeEvent:
    def __init__(self, body: Any) -> None:
        self.body = body


def nuclio_objects(kind: str) -> tuple[Any, Any]:
    """(context, Event class): the stand-ins, or nuclio-sdk's own classes."""
    if kind == "fake":
        return FakeContext(), FakeEvent
    nuclio_sdk = pytest.importorskip("nuclio_sdk")
    context = nuclio_sdk.Context(logger=FakeLogger())
    return context, lambda body: nuclio_sdk.Event(body=body, content_type="application/json")


def load_entrypoint(handler: str) -> Any:
    """What Nuclio's Python wrapper does with ``spec.handler`` ('module.sub:name')."""
    match = re.match(r"^([\w|-]+(\.[\w|-]+)*):(\w+)$", handler)
    assert match, handler
    module = __import__(match.group(1))
    for sub in match.group(1).split(".")[1:]:
        module = getattr(module, sub)
    return getattr(module, match.group(3))


def body_of(image: np.ndarray, **extra: Any) -> dict[str, Any]:
    return {"image": base64.b64encode(png(image)).decode(), **extra}


def decode_cvat_mask(values: list[int], h: int, w: int) -> np.ndarray:
    """A full-size bool mask from CVAT's list (values in the box, then xtl, ytl, xbr, ybr)."""
    xtl, ytl, xbr, ybr = values[-4:]
    crop = np.asarray(values[:-4], dtype=np.uint8).reshape(ybr - ytl + 1, xbr - xtl + 1)
    out = np.zeros((h, w), dtype=bool)
    out[ytl : ybr + 1, xtl : xbr + 1] = crop.astype(bool)
    return out


@pytest.fixture(scope="module")
def deployed(tiny_model_specs, tmp_path_factory) -> tuple[Any, Any]:
    """(handler, function): init_context run from the shipped function.yaml, tiny models."""
    config = yaml.safe_load(SHIPPED.read_text())
    config["metadata"]["annotations"]["spec"] = json.dumps(SPEC)
    path = tmp_path_factory.mktemp("cvat") / "function.yaml"
    path.write_text(yaml.safe_dump(config))
    sam, clip = tiny_model_specs
    handler = load_entrypoint(config["spec"]["handler"])
    init_context = sys.modules[handler.__module__].init_context
    context = FakeContext()
    with pytest.MonkeyPatch.context() as mp:
        for key, value in {
            "GROUNDED_SAM_FUNCTION_YAML": str(path),
            "GROUNDED_SAM_SAM": sam,
            "GROUNDED_SAM_CLIP": clip,
            "GROUNDED_SAM_DEVICE": "cpu",
            "GROUNDED_SAM_PROPOSALS": json.dumps(TINY_PROPOSALS),
            "GROUNDED_SAM_OPTIONS": '{"threshold": 0.0, "top_k": 4}',
        }.items():
            mp.setenv(key, value)
        init_context(context)
    assert any("ready" in line for _, line in context.logger.lines)
    return handler, context.user_data.function


def test_the_shipped_function_yaml_is_a_cvat_detector() -> None:
    config = yaml.safe_load(SHIPPED.read_text())
    annotations = config["metadata"]["annotations"]
    assert annotations["type"] == "detector"
    labels = read_labels(config)
    assert [(lab.name, lab.phrase) for lab in labels][2:] == [
        ("traffic_light", "traffic light"),
        ("sports_car", "red sports car"),
    ]
    assert {lab.type for lab in labels} == {"mask"}
    assert load_entrypoint(config["spec"]["handler"]).__module__ == "grounded_sam.serve.cvat"
    env = {e["name"]: e["value"] for e in config["spec"]["env"]}
    assert env["GROUNDED_SAM_FUNCTION_YAML"].endswith(
        "grounded_sam/serve/cvat_function/function.yaml"
    )
    from grounded_sam.grounding.options import QueryOptions  # the example options are valid
    from grounded_sam.serve.schemas import parse_query_options

    assert parse_query_options(env["GROUNDED_SAM_OPTIONS"], QueryOptions()).top_k == 10


@pytest.mark.parametrize("kind", ["fake", "nuclio_sdk"])
def test_handler_returns_the_engines_masks_as_cvat_shapes(deployed, tiny_gs, kind) -> None:
    handler, function = deployed
    assert function.options.threshold == 0.0  # GROUNDED_SAM_OPTIONS
    assert function.options.top_k == 4 and function.phrases == ["disc", "square"]
    context, event = nuclio_objects(kind)
    context.user_data.function = function
    reply = handler(context, event(body_of(IMAGE, threshold=0.1)))
    assert reply.status_code == 200 and reply.content_type == "application/json"
    got = json.loads(reply.body)
    want = tiny_gs.segment(IMAGE, ["disc", "square"], function.options.replace(threshold=0.1))
    assert len(want) > 0, "the reference should find something"
    names = ["disc", "dark_square"]
    expected = sorted(
        (names[int(c)], m.tobytes(), float(s))
        for c, m, s in zip(want.class_id, want.mask, want.confidence, strict=True)
    )
    assert len(got) == len(expected)
    decoded = []
    for shape in got:
        assert shape["type"] == "mask" and isinstance(shape["confidence"], str)
        assert all(v in (0, 1) for v in shape["mask"][:-4])
        mask = decode_cvat_mask(shape["mask"], 48, 64)
        decoded.append((shape["label"], mask.tobytes(), float(shape["confidence"])))
        pts = np.asarray(shape["points"]).reshape(-1, 2)  # the polygon for "masks to polygons"
        assert len(pts) >= 3 and (pts >= 0).all() and (pts[:, 0] <= 64).all()
    assert sorted(decoded) == expected
    assert [float(s["confidence"]) for s in got] == sorted(
        (float(s["confidence"]) for s in got), reverse=True
    )
    # a body Nuclio did not parse (no JSON content type) is read the same way
    raw = handler(context, FakeEvent(json.dumps(body_of(IMAGE, threshold=0.1)).encode()))
    assert json.loads(raw.body) == got


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"not json", "not JSON"),
        ({"threshold": 0.5}, "no image"),
        ({"image": "@@@"}, "base64"),
        ({"image": base64.b64encode(b"no image here").decode()}, "image"),
        (body_of(IMAGE, threshold=7), "threshold"),
        (body_of(IMAGE, threshold="high"), "threshold"),
    ],
)
def test_bad_requests_are_400_with_one_line(deployed, body, words) -> None:
    handler, function = deployed
    context = FakeContext()
    context.user_data.function = function
    reply = handler(context, FakeEvent(body))
    assert reply.status_code == 400
    message = json.loads(reply.body)["error"]
    assert words.lower() in message.lower() and "\n" not in message
    assert context.logger.lines[-1][0] == "warn" and message in context.logger.lines[-1][1]


def test_too_many_pixels_and_other_shape_types(tiny_gs) -> None:
    labels = (CvatLabel("disc", "disc", "polygon"), CvatLabel("square", "square", "rectangle"))
    function = CvatFunction(tiny_gs, labels, tiny_gs.options.replace(threshold=0.0))
    shapes = function.detect(body_of(IMAGE))
    assert {s["type"] for s in shapes} <= {"polygon", "rectangle"} and shapes
    for s in shapes:
        assert "mask" not in s
        if s["type"] == "rectangle":
            x1, y1, x2, y2 = s["points"]
            assert 0 <= x1 <= x2 <= 64 and 0 <= y1 <= y2 <= 48
        else:
            assert len(s["points"]) >= 6 and len(s["points"]) % 2 == 0
    small = CvatFunction(tiny_gs, labels, max_image_pixels=100)
    with pytest.raises(ValueError, match="pixels"):
        small.detect(body_of(IMAGE))


def test_cvat_mask_layout() -> None:
    mask = np.zeros((5, 6), dtype=bool)
    mask[1:3, 2:5] = True
    mask[2, 2] = False
    values = cvat_mask(mask)
    assert values == [1, 1, 1, 0, 1, 1, 2, 1, 4, 2]  # rows of the box, then xtl ytl xbr ybr
    assert (decode_cvat_mask(values, 5, 6) == mask).all()
    assert cvat_mask(np.zeros((3, 3), dtype=bool)) is None


@pytest.mark.parametrize(
    ("config", "words"),
    [
        ({"metadata": {}}, "metadata.annotations.spec"),
        ({"metadata": {"annotations": {"spec": "[{"}}}, "not valid JSON"),
        ({"metadata": {"annotations": {"spec": "[]"}}}, "non-empty"),
        ('[{"name": "a", "type": "skeleton"}]', "skeleton"),
        ('[{"name": "a"}, {"name": "a"}]', "twice"),
        ('[{"id": 1}]', "no name"),
    ],
)
def test_bad_label_specs(config, words) -> None:
    with pytest.raises(ValueError, match=words):
        read_labels(config)


def test_bad_settings_fail_at_start_up(tiny_gs, tmp_path, monkeypatch) -> None:
    from grounded_sam.serve.cvat import load_function

    with pytest.raises(ValueError, match="same phrase"):
        CvatFunction(tiny_gs, (CvatLabel("a_b", "a b"), CvatLabel("A B", "A b")))
    missing = {"GROUNDED_SAM_FUNCTION_YAML": str(tmp_path / "nope.yaml")}
    with pytest.raises(ValueError, match="GROUNDED_SAM_FUNCTION_YAML"):
        load_function(missing)
    good = tmp_path / "function.yaml"
    good.write_text(yaml.safe_dump({"metadata": {"annotations": {"spec": json.dumps(SPEC)}}}))
    env = {"GROUNDED_SAM_FUNCTION_YAML": str(good), "GROUNDED_SAM_PROPOSALS": "{points"}
    with pytest.raises(ValueError, match="GROUNDED_SAM_PROPOSALS"):
        load_function(env)
    env = {"GROUNDED_SAM_FUNCTION_YAML": str(good), "GROUNDED_SAM_OPTIONS": '{"top_k": -1}'}
    with pytest.raises(ValueError, match="GROUNDED_SAM_OPTIONS: .*top_k"):
        load_function(env)
    env["GROUNDED_SAM_OPTIONS"] = '{"thresh": 0.5}'
    with pytest.raises(ValueError, match="unknown field 'thresh'.*threshold, top_k"):
        load_function(env)


#: Every setting load_function reads (the function's spec.env).
SETTINGS = ["SAM", "CLIP", "DEVICE", "DTYPE", "OPTIONS", "PROPOSALS", "FUNCTION_YAML",
            "MAX_IMAGE_PIXELS"]  # fmt: skip


def test_every_setting_is_documented_and_the_extra_has_yaml() -> None:
    import tomllib

    import grounded_sam.serve.cvat as cvat

    root = SHIPPED.parents[3]
    code = Path(cvat.__file__).read_text(encoding="utf-8").split('"""', 2)[2]
    read = set(re.findall(r"GROUNDED_SAM_([A-Z_]+)\b", code)) | {"SAM", "CLIP", "DEVICE", "DTYPE"}
    assert read == set(SETTINGS), read  # the list above is the code's
    settings = cvat.__doc__.split("Settings (the function's ``spec.env``):", 1)[1]
    readme = (root / "README.md").read_text(encoding="utf-8")
    part = readme.split("**CVAT** runs", 1)[1].split("\n## ", 1)[0]
    for name in SETTINGS:
        assert f"GROUNDED_SAM_{name}" in settings, name
        assert f"GROUNDED_SAM_{name}" in part, name
    env = {e["name"]: e["value"] for e in yaml.safe_load(SHIPPED.read_text())["spec"]["env"]}
    from grounded_sam.serve.limits import DEFAULT_MAX_IMAGE_PIXELS

    assert int(env["GROUNDED_SAM_MAX_IMAGE_PIXELS"]) == DEFAULT_MAX_IMAGE_PIXELS
    extras = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    assert any(d.startswith("pyyaml>=6") for d in extras["optional-dependencies"]["serve"])


@pytest.mark.parametrize("value", ["0", "-1", "many", "1.5"])
def test_a_bad_max_image_pixels_fails_at_start_up(tmp_path, value) -> None:
    from grounded_sam.serve.cvat import load_function

    good = tmp_path / "function.yaml"
    good.write_text(yaml.safe_dump({"metadata": {"annotations": {"spec": json.dumps(SPEC)}}}))
    env = {"GROUNDED_SAM_FUNCTION_YAML": str(good), "GROUNDED_SAM_MAX_IMAGE_PIXELS": value}
    with pytest.raises(ValueError, match="GROUNDED_SAM_MAX_IMAGE_PIXELS must be a positive") as e:
        load_function(env)  # refused before any model is loaded
    assert repr(value) in str(e.value) and "\n" not in str(e.value)
