"""Label Studio's ML backend protocol on the server: ``/setup``, ``/predict``, ``/webhook``.

The shapes follow ``label_studio_ml/api.py`` of HumanSignal/label-studio-ml-backend (the
``label-studio-ml`` package): Label Studio checks ``GET /health`` (``{"status": "UP"}``),
``POST /setup`` (``{"project", "schema", ...}`` -> ``{"model_version"}``) when the backend is
connected, ``POST /predict`` (``{"tasks", "label_config", "project", "params": {"context"}}``
-> ``{"results": [one prediction per task]}``) for pre-annotations and interactive labeling,
and ``POST /webhook`` on annotation events (acknowledged: this backend does not train).

What is asked for:

* phrases from the labeling config: every ``<Label>`` of the first ``BrushLabels`` or
  ``PolygonLabels`` tag over an ``Image``; a label's ``hint``, else its ``alias``, if set, is
  the phrase sent to the model (open vocabulary: ``<Label value="Car" hint="red sports
  car"/>``); results carry the label's ``value``;
* or, in interactive mode, the text of a ``TextArea`` in the request's context (Label
  Studio's "smart" prompt, as its ``grounding_sam`` example backend reads it): its
  comma-separated phrases; a phrase that names a label is returned as that label, another
  one as itself;
* or the ``KeyPointLabels`` clicks (``is_positive``) and ``RectangleLabels`` box of the
  context: SAM's prompt decoder on the image's index, the best of its three masks, returned
  with the clicked label.

Results: ``brushlabels`` in Label Studio's own RLE (:mod:`grounded_sam.serve.brush`) for a
``BrushLabels`` tag, ``polygonlabels`` in percent of the image size for a ``PolygonLabels``
tag (one polygon per detection: a mask in several parts is joined first, as for YOLO
exports); each with ``score`` (the detection's confidence), and per task the mean score and
``model_version``. Query options: the server's defaults, changed by the project's extra params
(sent with ``/setup``), the tag's ``model_*`` attributes (``model_score_threshold="0.4"``) and
the request's ``params`` (:mod:`grounded_sam.serve.labelstudio_options`).

Task images are read only from Label Studio itself (``LABEL_STUDIO_URL``: uploads, local
storage, cloud storage ``s3://`` / ``gs://`` / ``azure-blob://`` URIs through its
``/tasks/ID/presign/`` resolver, same-host redirects only) or from files under a configured
local-files root (:mod:`grounded_sam.serve.labelstudio_images`). Any other URL is refused: the
server never fetches arbitrary URLs.
"""

from __future__ import annotations

import logging
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from grounded_sam.serve.labelstudio_images import ImageSource, LabelStudioError

if TYPE_CHECKING:
    from fastapi import FastAPI

    from grounded_sam.grounding.options import QueryOptions
    from grounded_sam.serve.engine import ServeEngine

__all__ = [
    "ImageSource",
    "LabelConfig",
    "LabelStudioError",
    "add_routes",
    "ls_results",
    "parse_label_config",
]

logger = logging.getLogger(__name__)

#: Largest labeling config read (a real one is a few KB).
MAX_CONFIG_CHARS = 1_000_000
#: Most tasks in one /predict request.
MAX_TASKS = 100


# -- the labeling config ----------------------------------------------------------------------


@dataclass(frozen=True)
class LabelTag:
    """A ``BrushLabels`` / ``PolygonLabels`` tag: ``labels`` are ``(value, phrase)`` pairs.

    ``options`` are the query options its ``model_*`` attributes set, as ``(knob, text)``
    pairs (:mod:`grounded_sam.serve.labelstudio_options`).
    """

    kind: str  # "brushlabels" or "polygonlabels"
    from_name: str
    to_name: str
    labels: tuple[tuple[str, str], ...]
    options: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class LabelConfig:
    """What the backend reads from a labeling config."""

    tags: tuple[LabelTag, ...]
    images: dict[str, str] = field(default_factory=dict)  # Image name -> task data key

    @property
    def tag(self) -> LabelTag:
        """The first brush or polygon tag (the one predictions are made for)."""
        return self.tags[0]


def parse_label_config(xml: str) -> LabelConfig:
    """Read the image and the brush / polygon label tags of a labeling config.

    Raises:
        LabelStudioError: Not XML, too long, no ``BrushLabels`` / ``PolygonLabels`` tag
            over an ``Image`` with labels, or a ``model_*`` attribute that names no query
            option.
    """
    from grounded_sam.serve.labelstudio_options import tag_option_attributes

    if not isinstance(xml, str) or not xml.strip():
        raise LabelStudioError("The labeling config is missing: send the project's label_config.")
    if len(xml) > MAX_CONFIG_CHARS:
        raise LabelStudioError(f"The labeling config has over {MAX_CONFIG_CHARS:,} characters.")
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise LabelStudioError(f"The labeling config is not valid XML ({exc}).") from None
    images = {
        el.get("name", ""): el.get("value", "").lstrip("$")
        for el in root.iter()
        if el.tag.lower() == "image" and el.get("name")
    }
    tags = []
    for el in root.iter():
        kind = el.tag.lower()
        if kind not in ("brushlabels", "polygonlabels") or el.get("toName") not in images:
            continue
        labels = tuple(
            (lab.get("value", ""), (lab.get("hint") or lab.get("alias") or lab.get("value", "")))
            for lab in el.iter()
            if lab.tag.lower() == "label" and lab.get("value")
        )
        try:
            options = tag_option_attributes(el.attrib, el.get("name", ""))
        except ValueError as exc:
            raise LabelStudioError(str(exc)) from None
        tags.append(LabelTag(kind, el.get("name", ""), el.get("toName", ""), labels, options))
    if not tags:
        raise LabelStudioError(
            "The labeling config has no BrushLabels or PolygonLabels tag over an Image: this "
            "backend returns masks, e.g. <BrushLabels name='tag' toName='image'><Label "
            "value='cat'/></BrushLabels><Image name='image' value='$image'/>."
        )
    return LabelConfig(tuple(tags), images)


# -- results ------------------------------------------------------------------------------------


def _polygon_percent(mask: np.ndarray) -> list[list[float]] | None:
    """One polygon (the parts joined) in percent of the image, or None for an empty mask."""
    import supervision as sv

    from grounded_sam.export.single_part import join_mask_parts

    if not mask.any():
        return None
    polygons = sv.mask_to_polygons(join_mask_parts(mask))
    if not polygons:
        return None
    poly = max(polygons, key=len).astype(float)
    h, w = mask.shape
    return [[x * 100.0 / w, y * 100.0 / h] for x, y in poly.tolist()]


def ls_results(
    dets: Any, tag: LabelTag, labels: list[str], *, best_only: bool = False
) -> list[dict[str, Any]]:
    """Label Studio results (``brushlabels`` / ``polygonlabels``) of detections.

    Args:
        dets: Detections with masks (N, H, W) bool, ``confidence`` and ``class_id``.
        tag: The tag the results are for.
        labels: Label value per ``class_id``.
        best_only: Keep only the highest-confidence detection (a SAM prompt's best mask).
    """
    from grounded_sam.serve.brush import mask_to_rle

    if dets.mask is None or len(dets) == 0:
        return []
    order = np.argsort(-np.nan_to_num(dets.confidence, nan=0.0), kind="stable")
    if best_only:
        order = order[:1]
    h, w = dets.mask.shape[1:]
    out = []
    for i in order.tolist():
        class_id = 0 if dets.class_id is None else int(dets.class_id[i])
        label = labels[class_id] if class_id < len(labels) else labels[-1]
        score = float(dets.confidence[i]) if dets.confidence is not None else 0.0
        if tag.kind == "brushlabels":
            value = {"format": "rle", "rle": mask_to_rle(dets.mask[i]), "brushlabels": [label]}
        else:
            points = _polygon_percent(dets.mask[i])
            if points is None:
                continue
            value = {"points": points, "polygonlabels": [label], "closed": True}
        out.append(
            {
                "id": uuid.uuid4().hex[:10],
                "from_name": tag.from_name,
                "to_name": tag.to_name,
                "type": tag.kind,
                "original_width": int(w),
                "original_height": int(h),
                "image_rotation": 0,
                "value": value,
                "score": score if np.isfinite(score) else 0.0,
                "readonly": False,
            }
        )
    return out


def _context_prompts(context: Any, config: LabelConfig) -> dict[str, Any]:
    """What an interactive request's context asks: text, or clicks / a box with a label."""
    results = context.get("result") if isinstance(context, dict) else None
    found: dict[str, Any] = {}
    for item in results if isinstance(results, list) else []:
        if not isinstance(item, dict) or not isinstance(item.get("value"), dict):
            continue
        kind, value = str(item.get("type", "")).lower(), item["value"]
        if kind == "textarea" and value.get("text"):
            text = value["text"]
            found["text"] = ", ".join(map(str, text)) if isinstance(text, list) else str(text)
        elif kind in ("keypointlabels", "rectanglelabels"):
            w, h = item.get("original_width"), item.get("original_height")
            if not (isinstance(w, (int, float)) and isinstance(h, (int, float))):
                raise LabelStudioError(f"A {kind} context item has no original_width/height.")
            x, y = float(value.get("x", 0)) * w / 100, float(value.get("y", 0)) * h / 100
            names = value.get(kind) or []
            if names:
                found["label"] = str(names[0])
            if kind == "keypointlabels":
                found.setdefault("points", []).append([x, y])
                positive = item.get("is_positive", True)
                found.setdefault("labels", []).append(1 if positive in (True, 1, "true") else 0)
            else:
                bw, bh = (
                    float(value.get("width", 0)) * w / 100,
                    float(value.get("height", 0)) * h / 100,
                )
                found["box"] = [x, y, x + bw, y + bh]
    return found


async def predict_task(
    engine: ServeEngine,
    source: ImageSource | None,
    decode: Any,
    task: dict[str, Any],
    config: LabelConfig,
    context: Any,
    options: QueryOptions | None = None,
) -> dict[str, Any]:
    """One task's prediction: ``{"result": [...], "score": mean, "model_version": ...}``.

    ``options`` are the request's query options (None: the server's defaults).
    """
    from starlette.concurrency import run_in_threadpool

    from grounded_sam.inputs import parse_prompt

    tag = config.tag
    key = config.images.get(tag.to_name, "")
    data = task.get("data") if isinstance(task, dict) else None
    if not isinstance(data, dict) or key not in data:
        raise LabelStudioError(f"The task has no data[{key!r}] (the image of the config).")
    if source is None:
        raise LabelStudioError(
            "The server cannot read task images: start it with --label-studio-url and "
            "LABEL_STUDIO_API_KEY, or --local-files-root."
        )
    raw = await run_in_threadpool(source.read, data[key], task.get("id"))
    image = await decode(raw, "the task image")
    asked = _context_prompts(context, config)
    values = [v for v, _ in tag.labels]
    if "points" in asked or "box" in asked:
        index_id, _, _ = await engine.index(image)
        _, dets = await engine.predict(
            index_id, points=asked.get("points"), labels=asked.get("labels"),
            box=asked.get("box"), multimask_output=True,
        )  # fmt: skip
        label = asked.get("label") or (values[0] if values else "object")
        results = await run_in_threadpool(ls_results, dets, tag, [label], best_only=True)
    else:
        if "text" in asked:
            phrases = parse_prompt(asked["text"])
            by_name = {n.lower(): v for v, p in tag.labels for n in (v, p)}
            labels = [by_name.get(p.lower(), p) for p in phrases]
        else:
            if not tag.labels:
                raise LabelStudioError(f"The config's {tag.from_name!r} tag has no labels.")
            phrases, labels = [p for _, p in tag.labels], values
        options = options if options is not None else engine.gs.options
        options.check_for_image(image.shape[:2])
        _, dets = await engine.segment(image, phrases, options)
        results = await run_in_threadpool(ls_results, dets, tag, labels)
    score = float(np.mean([r["score"] for r in results])) if results else 0.0
    return {"result": results, "score": score, "model_version": engine.model_version}


def add_routes(
    app: FastAPI,
    engine: ServeEngine,
    *,
    source: ImageSource | None,
    decode: Any,
    max_bytes: int,
) -> None:
    """Add ``/setup``, ``/predict``, ``/webhook`` (and ``/metrics``) to the app."""
    from fastapi import Body

    from grounded_sam.serve.labelstudio_options import ProjectParams, request_options

    projects = ProjectParams()  # the extra params of each project, from /setup

    if source is not None:
        source.max_bytes = min(source.max_bytes, max_bytes)

    @app.post("/setup", summary="Label Studio: connect a project (its labeling config)",
              tags=["label-studio"])  # fmt: skip
    async def setup(body: dict[str, Any] = Body(...)) -> dict[str, Any]:  # noqa: B008
        schema = body.get("schema") or body.get("label_config")
        extra_params = body.get("extra_params")
        if schema is not None:  # the tag's model_* options are checked now, as a request would
            tag = parse_label_config(schema).tag
            request_options(engine.gs.options, extra_params=extra_params,
                            tag_options=tag.options, tag=tag.from_name)  # fmt: skip
        # kept only once all of it is valid: a refused /setup changes no later prediction
        projects.set(body.get("project"), extra_params, engine.gs.options)
        return {"model_version": engine.model_version}

    @app.post("/predict", summary="Label Studio: predictions for tasks", tags=["label-studio"])
    async def predict(body: dict[str, Any] = Body(...)) -> dict[str, Any]:  # noqa: B008
        tasks = body.get("tasks")
        if not isinstance(tasks, list) or not tasks:
            raise LabelStudioError("The request has no tasks: send {'tasks': [...]}.")
        if len(tasks) > MAX_TASKS:
            raise LabelStudioError(f"{len(tasks)} tasks in one request; the limit is {MAX_TASKS}.")
        config = parse_label_config(body.get("label_config"))
        params = body.get("params") if isinstance(body.get("params"), dict) else {}
        context = params.get("context", body.get("context"))
        options = request_options(
            engine.gs.options,
            extra_params=projects.get(body.get("project")),
            tag_options=config.tag.options,
            tag=config.tag.from_name,
            params=params,
        )
        results = []
        for task in tasks:
            try:
                results.append(
                    await predict_task(engine, source, decode, task, config, context, options)
                )
            except Exception as exc:
                if len(tasks) == 1:
                    raise
                task_id = task.get("id") if isinstance(task, dict) else None
                logger.warning("Label Studio task %s: no prediction (%s)", task_id, exc)
                results.append({"result": [], "score": 0.0, "model_version": engine.model_version})
        return {"results": results, "model_version": engine.model_version}

    @app.post("/webhook", summary="Label Studio: annotation events (acknowledged, no training)",
              tags=["label-studio"])  # fmt: skip
    async def webhook(body: dict[str, Any] = Body(...)) -> dict[str, Any]:  # noqa: B008
        logger.debug("Label Studio event %s acknowledged", body.get("action"))
        return {"status": "ok", "result": None, "detail": "this backend does not train"}

    @app.get("/metrics", summary="Label Studio: metrics (none)", tags=["label-studio"])
    async def metrics() -> dict[str, Any]:
        return {}
