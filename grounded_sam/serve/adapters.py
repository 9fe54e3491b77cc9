"""X-AnyLabeling's remote-server protocol on the same server, under ``/x-anylabeling``.

X-AnyLabeling's "Remote-Server" model (``anylabeling/services/auto_labeling/remote_server.py``
in CVHub520/X-AnyLabeling) appends ``/v1/models`` and ``/v1/predict`` to its configured
``server_url`` and sends the key in a ``Token`` header. With ``server_url`` set to
``http://HOST:9090/x-anylabeling`` it reaches these two routes (our own ``/v1/models`` and
``/v1/predict`` keep their shapes):

* ``GET /x-anylabeling/v1/models``: ``{"success": true, "data": {MODEL_ID: {"display_name",
  "batch_processing_mode", "widgets", "params"}}}`` (X-AnyLabeling-Server's shape; the
  widgets are the text-prompt ones of its SAM 3 config: a text box, send, confidence, mask
  fineness, keep existing annotations);
* ``POST /x-anylabeling/v1/predict``: JSON ``{"model", "image" (data URI or raw base64),
  "params": {"text_prompt", "conf_threshold", ...}}`` -> ``{"success": true, "data":
  {"shapes": [...], "description": ""}}``, one ``polygon`` shape per part of each mask
  (``label``, ``points`` ``[[x, y], ...]`` pixels, ``score`` = confidence, ``group_id``
  shared by the parts of one instance).

``text_prompt`` phrases are separated by commas, or by periods when there is no comma (the
``"person.car"`` style of grounding models in X-AnyLabeling). ``conf_threshold`` is the query
``threshold``; other params (``iou_threshold``, ``epsilon_factor``, ``marks``) are ignored.
Errors are this server's ``{"error": ...}`` with a 4xx status.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from fastapi import FastAPI

    from grounded_sam.serve.engine import ServeEngine

__all__ = ["MODEL_ID", "PREFIX", "XAnyLabelingRequest", "add_routes", "prompt_phrases", "shapes"]

PREFIX = "/x-anylabeling"
#: The one model this server lists (X-AnyLabeling's model selector shows it).
MODEL_ID = "grounded-sam"
WIDGETS = (
    ("edit_text", None),
    ("button_send", None),
    ("input_conf", None),
    ("edit_conf", None),
    ("mask_fineness_slider", 10),
    ("mask_fineness_value_label", None),
    ("toggle_preserve_existing_annotations", False),
)


class XAnyLabelingRequest(BaseModel):
    """The body X-AnyLabeling's remote-server model posts to ``/v1/predict``."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(description=f"the model id ({MODEL_ID!r})")
    image: str = Field(description="the image: a data URI (data:image/png;base64,...) or base64")
    params: dict[str, Any] = Field(default_factory=dict)


def prompt_phrases(text: Any) -> list[str]:
    """The phrases of X-AnyLabeling's ``text_prompt`` (commas, else periods, separate them).

    Raises:
        ValueError: No text prompt, or one :func:`grounded_sam.inputs.parse_prompt` refuses.
    """
    from grounded_sam.inputs import parse_prompt

    if not isinstance(text, str) or not text.strip(" .,"):
        raise ValueError(
            "No text prompt: type the phrases to segment (e.g. 'dog, cat') in X-AnyLabeling's "
            "text box; this model takes text prompts only."
        )
    if "," not in text:
        text = text.replace(".", ",")
    return parse_prompt(text, what="text_prompt")


def _image_bytes(image: str) -> bytes:
    """The bytes of a data URI or raw base64 string."""
    data = image.partition(",")[2] if image.startswith("data:") else image
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(
            "image is not base64: send a data URI (data:image/png;base64,...) or base64 text."
        ) from None


def shapes(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    """X-AnyLabeling shapes of a ``format=polygon`` detections document.

    Args:
        doc: What :func:`grounded_sam.serve.documents.detections_document` returns with
            ``fmt="polygon"`` (each instance's ``polygons``: ``[[x, y], ...]`` pixels per part).

    Returns:
        One ``polygon`` shape per part with at least 3 points; the parts of the i-th instance
        share ``group_id`` i + 1.
    """
    out = []
    for i, inst in enumerate(doc["instances"]):
        for polygon in inst.get("polygons") or []:
            if len(polygon) < 3:
                continue
            out.append(
                {
                    "label": inst["label"],
                    "shape_type": "polygon",
                    "points": polygon,
                    "score": min(max(float(inst["confidence"]), 0.0), 1.0),
                    "group_id": i + 1,
                    "attributes": {},
                    "description": None,
                    "difficult": False,
                    "flags": None,
                }
            )
    return out


def add_routes(
    app: FastAPI,
    engine: ServeEngine,
    *,
    decode: Callable[[bytes, str], Awaitable[Any]],
    models: Mapping[str, str],
) -> None:
    """Add ``/x-anylabeling/v1/models`` and ``/x-anylabeling/v1/predict`` to ``app``.

    Args:
        app: The server's app.
        engine: Its worker.
        decode: ``await decode(bytes, name)`` -> (H, W, 3) uint8 RGB, within the app's bounds.
        models: ``{"sam": ..., "clip": ...}`` for the documents.
    """
    from fastapi.responses import JSONResponse
    from starlette.concurrency import run_in_threadpool

    from grounded_sam.serve.documents import detections_document

    gs = engine.gs

    @app.get(f"{PREFIX}/v1/models", summary="X-AnyLabeling: the model list", tags=["adapters"])
    async def xany_models() -> dict[str, Any]:
        return {
            "success": True,
            "data": {
                MODEL_ID: {
                    "display_name": "Grounded SAM (text prompt)",
                    "batch_processing_mode": "text_prompt",
                    "widgets": [
                        {"name": n, "value": gs.options.threshold if n == "edit_conf" else v}
                        for n, v in WIDGETS
                    ],
                    "params": {**models, "device": str(gs.device)},
                }
            },
        }

    @app.post(
        f"{PREFIX}/v1/predict",
        summary="X-AnyLabeling: segment",
        tags=["adapters"],
        response_model=None,
    )
    async def xany_predict(body: XAnyLabelingRequest):  # a JSONResponse (unannotated)
        if body.model != MODEL_ID:
            raise ValueError(f"Unknown model {body.model!r}: this server serves {MODEL_ID!r}.")
        phrases = prompt_phrases(body.params.get("text_prompt"))
        options = gs.options
        conf = body.params.get("conf_threshold")
        if conf is not None:
            options = options.replace(threshold=conf)
        image = await decode(_image_bytes(body.image), "the image")
        options.check_for_image(image.shape[:2])
        key, dets = await engine.segment(image, phrases, options)

        def build() -> JSONResponse:
            doc = detections_document(dets, image.shape[:2], index_id=key, fmt="polygon",
                                      prompt=phrases, phrases=phrases, models=models)  # fmt: skip
            return JSONResponse(
                {"success": True, "data": {"shapes": shapes(doc), "description": ""}}
            )

        return await run_in_threadpool(build)
