"""The FastAPI app: ``/health``, ``/v1/...``, the Label Studio routes, OpenAPI at ``/docs``.

Routes (JSON in and out unless said; every error is ``{"error": "one line"}`` with a 4xx
status, or 500 with no detail for a bug; tracebacks go to the server log only):

* ``GET /health``: liveness, never waits for the models (no key needed);
* ``GET /v1/models``: the models, device, dtype, default options and bounds;
* ``POST /v1/segment`` (multipart: ``image`` file, ``prompt``, query options as form
  fields, ``format``): index (kept) and query in one call;
* ``POST /v1/index`` (multipart ``image``): ``{"index_id", "built", ...}``; the id is the
  content hash of the pixels, so the same image is indexed once;
* ``POST /v1/query`` (``index_id``, ``prompt``, options, ``format``), ``POST /v1/predict``
  (``index_id``, points / labels / box), ``POST /v1/everything`` (``index_id``, SAM's
  automatic-mask knobs): on a stored index; an unknown or evicted id is a 404 that says to
  index again;
* Label Studio's ML backend protocol: ``POST /setup``, ``/predict``, ``/webhook``
  (:mod:`grounded_sam.serve.labelstudio`).

Status codes: 401 no or wrong API key, 404 unknown index or route, 413 body over the bound,
422 bad input (not an image, too many pixels, bad JSON, unknown field, out-of-range value, a
phrase the engine refuses), 502 Label Studio did not give an image, 503 queue full.
"""

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from grounded_sam.grounding.options import QueryOptions
from grounded_sam.inputs import parse_prompt
from grounded_sam.serve.auth import ApiKey
from grounded_sam.serve.documents import detections_document, everything_document
from grounded_sam.serve.engine import Busy, ServeEngine, UnknownIndex
from grounded_sam.serve.limits import (
    DEFAULT_MAX_IMAGE_PIXELS,
    DEFAULT_MAX_UPLOAD_BYTES,
    BodyLimit,
    PayloadTooLarge,
    decode_image,
)
from grounded_sam.serve.schemas import (
    EverythingRequest,
    PredictRequest,
    QueryRequest,
    SegmentForm,
    error_message,
    everything_settings,
    multipart_schema,
    query_options,
)

__all__ = ["create_app", "error_message"]

logger = logging.getLogger(__name__)

NO_PROMPT = (
    "Nothing to look for: give a prompt such as 'dog, cat', exemplars=[[x1, y1, x2, y2]] "
    "around an example object, or both."
)

_ERRORS = {
    401: {"description": "no or wrong API key"},
    404: {"description": "unknown or evicted index id: send the image to /v1/index again"},
    413: {"description": "request body over the upload bound"},
    422: {"description": "bad input: {'error': 'what was wrong and what to do'}"},
    503: {"description": "the queue is full: retry shortly"},
}


class UserError(ValueError):
    """A request the server refuses with a message (HTTP 422 unless ``status`` says)."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": " ".join(str(message).split())}, status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Every error as ``{"error": ...}`` with its status; no traceback in a response."""

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, error_message(list(exc.errors())))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(UnknownIndex)
    async def _unknown(_: Request, exc: UnknownIndex) -> JSONResponse:
        return _error(404, str(exc.args[0]))

    @app.exception_handler(Busy)
    async def _busy(_: Request, exc: Busy) -> JSONResponse:
        return _error(503, str(exc), {"Retry-After": "1"})

    @app.exception_handler(PayloadTooLarge)
    async def _too_large(_: Request, exc: PayloadTooLarge) -> JSONResponse:
        return _error(413, str(exc))

    @app.exception_handler(UserError)
    async def _user(_: Request, exc: UserError) -> JSONResponse:
        return _error(exc.status, str(exc))

    @app.exception_handler(ValueError)
    @app.exception_handler(TypeError)
    async def _bad_value(_: Request, exc: Exception) -> JSONResponse:
        # a Label Studio error carries its own status (502: Label Studio gave no image)
        return _error(getattr(exc, "status", 422), str(exc) or type(exc).__name__)

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        logger.error("Unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
        return _error(500, f"Internal server error ({type(exc).__name__}); see the server log.")


def _validate(model: type[BaseModel], data: dict[str, Any]) -> BaseModel:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise UserError(error_message(exc.errors())) from None


async def read_upload(request: Request, *, fields: bool) -> tuple[bytes, str, dict[str, str]]:
    """The multipart ``image`` file (bytes, file name) and the other form fields.

    Raises:
        UserError: Not multipart, no ``image`` file, a second file, a field given twice, or
            form fields on a route that takes none.
    """
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise UserError(
            "Send the image as multipart/form-data with a file field named 'image' (curl -F "
            "image=@photo.jpg)."
        )
    try:
        form = await request.form(max_files=1, max_fields=64)
    except StarletteHTTPException as exc:
        raise UserError(f"Malformed multipart body: {exc.detail}") from None
    try:
        data, name, values = None, "the upload", {}
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                if key != "image" or data is not None:
                    raise UserError(f"Unexpected file field {key!r}: send one file, as 'image'.")
                data = await value.read()
                name = f"the upload {value.filename!r}" if value.filename else name
            elif key in values or key == "image":
                raise UserError(f"Form field {key!r} is given twice (or 'image' is not a file).")
            elif not fields:
                raise UserError(f"Unknown form field {key!r}: this route takes only 'image'.")
            else:
                values[key] = value
    finally:
        await form.close()
    if data is None:
        raise UserError("No image: send the image file as the multipart field 'image'.")
    return data, name, values


async def _json(make: Any, *args: Any, **kwargs: Any) -> JSONResponse:
    """``JSONResponse(make(...))``, built off the event loop (RLE / polygons of many masks).

    The document is plain JSON types already, so it skips FastAPI's response validation.
    """

    def build() -> JSONResponse:
        return JSONResponse(make(*args, **kwargs))

    return await run_in_threadpool(build)


def _phrases(prompt: str | list[str] | None, options: QueryOptions) -> list[str] | None:
    """The prompt's phrases (None for an exemplar-only query); checks negatives too."""
    if prompt is None:
        if options.exemplars is None:
            raise UserError(NO_PROMPT)
        return None
    phrases = parse_prompt(prompt)
    options.negatives_for(phrases)
    return phrases


def _labels(phrases: list[str] | None, options: QueryOptions) -> list[str]:
    """The names ``class_id`` indexes: the phrases, then the exemplar label."""
    return [*(phrases or []), *([options.exemplar_label] if options.exemplars else [])]


def create_app(
    engine: ServeEngine,
    *,
    api_key: str | None = None,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    label_studio: Any = None,
) -> FastAPI:
    """The server's ASGI app over ``engine``.

    Args:
        engine: The worker (its engine's ``options`` are the default query options).
        api_key: Required on every route but ``/health`` when set (see
            :mod:`grounded_sam.serve.auth`).
        max_upload_bytes: Largest request body (413 beyond).
        max_image_pixels: Most pixels of an uploaded or fetched image (422 beyond).
        label_studio: A :class:`grounded_sam.serve.labelstudio.ImageSource` (where task
            images may be read from); None: task images cannot be read (Label Studio's
            ``/predict`` answers 422 saying what to configure).

    Returns:
        The app (serve it with uvicorn; its lifespan starts and stops the worker).
    """
    from contextlib import asynccontextmanager

    from grounded_sam import __version__
    from grounded_sam.serve import adapters, labelstudio

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        engine.start()
        yield
        engine.close()

    app = FastAPI(
        title="grounded-sam",
        version=__version__,
        summary="Text-prompted instance segmentation (SAM region proposals scored by CLIP).",
        description=__doc__,
        lifespan=lifespan,
    )
    app.state.engine = engine
    install_error_handlers(app)
    bodies = multipart_schema()
    gs = engine.gs
    no_clip = getattr(gs, "grounds_text", False)  # SAM 3 grounds text itself
    models = {"sam": gs.model_ids[0], "clip": None if no_clip else gs.model_ids[1]}

    async def image_of(data: bytes, name: str):
        return await run_in_threadpool(decode_image, data, max_pixels=max_image_pixels, name=name)

    @app.get("/health", summary="Liveness: answers while the models work (no key needed)")
    async def health() -> dict[str, Any]:
        return {
            "status": "UP",
            "model_class": "GroundedSAM",
            "model_version": engine.model_version,
            "pending": engine.pending,
        }

    @app.get("/v1/models", summary="What is loaded: models, device, dtype, defaults, bounds")
    async def models_route() -> dict[str, Any]:
        info = engine.describe()
        info["limits"] = {
            "max_upload_bytes": max_upload_bytes,
            "max_image_pixels": max_image_pixels,
        }
        return info

    @app.post(
        "/v1/segment",
        summary="Segment what a prompt names in an uploaded image (multipart)",
        openapi_extra={"requestBody": bodies["segment"]},
        responses=_ERRORS,
    )
    async def segment(request: Request) -> JSONResponse:
        data, name, fields = await read_upload(request, fields=True)
        form = _validate(SegmentForm, fields)
        options = query_options(form.model_dump(), gs.options)
        phrases = _phrases(form.prompt, options)
        image = await image_of(data, name)
        options.check_for_image(image.shape[:2])
        key, dets = await engine.segment(image, phrases, options)
        return await _json(
            detections_document,
            dets,
            image.shape[:2],
            index_id=key,
            fmt=form.format,
            prompt=form.prompt,
            phrases=_labels(phrases, options),
            models=models,
        )

    @app.post(
        "/v1/index",
        summary="Index an uploaded image once; query it by its id (the content hash)",
        openapi_extra={"requestBody": bodies["index"]},
        responses=_ERRORS,
    )
    async def index(request: Request) -> dict[str, Any]:
        data, name, _ = await read_upload(request, fields=False)
        image = await image_of(data, name)
        key, built_index, built = await engine.index(image)
        h, w = image.shape[:2]
        return {
            "index_id": key,
            "built": built,
            "width": w,
            "height": h,
            "regions": len(built_index),
            "nbytes": built_index.nbytes,
        }

    @app.post("/v1/query", summary="Answer a prompt from an index", responses=_ERRORS)
    async def query(body: QueryRequest) -> JSONResponse:  # type: ignore[valid-type]
        req = body.model_dump()
        options = query_options(req, gs.options)
        phrases = _phrases(req["prompt"], options)
        found, dets = await engine.query(req["index_id"], phrases, options)
        return await _json(
            detections_document,
            dets,
            found.size,
            index_id=req["index_id"],
            fmt=req["format"],
            prompt=req["prompt"],
            phrases=_labels(phrases, options),
            models=models,
        )

    @app.post("/v1/predict", summary="SAM point / box prompts on an index", responses=_ERRORS)
    async def predict(body: PredictRequest) -> JSONResponse:
        if body.points is None and body.box is None:
            raise UserError("Give points=[[x, y], ...] (with labels) or box=[x1, y1, x2, y2].")
        if body.labels is not None and body.points is None:
            raise UserError("labels were given without points: give points=[[x, y], ...].")
        found, dets = await engine.predict(
            body.index_id,
            points=body.points,
            labels=body.labels,
            box=body.box,
            multimask_output=body.multimask_output,
        )
        return await _json(
            detections_document,
            dets,
            found.size,
            index_id=body.index_id,
            fmt=body.format,
            prompt=None,
            phrases=["prompt"],
            models=models,
        )

    @app.post("/v1/everything", summary="SAM's automatic masks on an index", responses=_ERRORS)
    async def everything(body: EverythingRequest) -> JSONResponse:  # type: ignore[valid-type]
        settings = everything_settings(body.model_dump())
        found, dets = await engine.everything(body.index_id, settings)
        return await _json(
            everything_document,
            dets,
            found.size,
            index_id=body.index_id,
            fmt=body.format,
            models=models,
            settings=settings,
        )

    labelstudio.add_routes(
        app, engine, source=label_studio, decode=image_of, max_bytes=max_upload_bytes
    )
    adapters.add_routes(app, engine, decode=image_of, models=models)  # X-AnyLabeling
    app.add_middleware(BodyLimit, max_bytes=max_upload_bytes)
    app.add_middleware(ApiKey, key=api_key)  # outermost: no body is read without the key
    return app
