"""Request bodies and form fields of the server, derived from :class:`QueryOptions`.

Every query knob of ``/v1/segment`` (a multipart form field) and ``/v1/query`` (a JSON member)
is built from one :class:`~grounded_sam.grounding.options.QueryOptions` field, as the CLI's
flags are (:mod:`grounded_sam.cli.options`): its name, its help text (the OpenAPI
``description``) and its kind come from the field; a knob added to ``QueryOptions`` shows up
here without a change. Values are checked by ``QueryOptions`` only (ranges, choices, phrase
rules), so the server and the CLI refuse exactly the same values with the same messages.

Conventions shared with the CLI: every knob is optional (absent: the server's default, as set
by ``grounded-sam serve``'s flags); ``top_k`` 0 means no limit; ``negative`` is one
comma-separated string or a list. In a multipart form, box and point lists are JSON text
(``exemplars=[[10, 20, 60, 90]]``). Unknown fields are refused (422).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, Json, ValidationError, create_model

from grounded_sam.grounding.options import QueryOptions, query_fields

__all__ = [
    "FORMATS",
    "EverythingRequest",
    "IndexRef",
    "PredictRequest",
    "QueryRequest",
    "SegmentForm",
    "QueryOptionsBody",
    "error_message",
    "everything_settings",
    "multipart_schema",
    "parse_query_options",
    "query_options",
]

#: How masks are returned: COCO RLE (the CLI's JSON) or polygons (xy pixel outlines).
FORMATS = ("rle", "polygon")
Format = Literal["rle", "polygon"]

_FORMAT_HELP = (
    "how masks are returned: 'rle' (COCO RLE under 'mask', as the CLI writes) or 'polygon' "
    "(outlines under 'polygons', [[x, y], ...] pixels per part; 'mask' is null)"
)
_STRICT = ConfigDict(extra="forbid")


def _kind(f: dataclasses.Field) -> str:
    """The request kind of a dataclass field, from its (string) type annotation."""
    kinds = {
        "float": "float",
        "int": "int",
        "int | None": "optional_int",
        "bool": "bool",
        "str": "str",
        "tuple[str, ...]": "phrases",
        "tuple[Box, ...] | None": "rows",
        "tuple[Point, ...] | None": "rows",
        "tuple[int, ...] | None": "ints",
    }
    try:
        return kinds[str(f.type)]
    except KeyError:
        raise TypeError(
            f"{f.name} has type {f.type!r}, which has no request field kind: add one in "
            "grounded_sam.serve.schemas."
        ) from None


def _annotation(f: dataclasses.Field, *, form: bool) -> Any:
    """The pydantic type of a knob in a JSON body (``form=False``) or a multipart form."""
    kind = _kind(f)
    choices = f.metadata.get("choices") if f.metadata else None
    if kind == "str" and choices:
        return Literal[tuple(choices)] | None  # type: ignore[valid-type]
    if kind == "phrases":
        return str | None if form else str | list[str] | None
    if kind == "rows":
        return Json[list[list[float]]] | None if form else list[list[float]] | None
    if kind == "ints":
        return Json[list[int]] | None if form else list[int] | None
    return {"float": float, "int": int, "optional_int": int, "bool": bool, "str": str}[kind] | None


def _describe(f: dataclasses.Field) -> str:
    help_text = f.metadata.get("help", "") if f.metadata else ""
    default = "no limit" if f.default is None and _kind(f) == "optional_int" else f.default
    if _kind(f) == "optional_int":
        help_text += " (0: no limit)"
    if _kind(f) == "rows" and f.default is None:
        default = None
    return f"{help_text}; absent: the server's default ({default!r} unless serve's flags set it)"


def _option_fields(*, form: bool) -> dict[str, Any]:
    return {
        f.name: (_annotation(f, form=form), Field(default=None, description=_describe(f)))
        for f in query_fields()
    }


#: Multipart form fields of ``/v1/segment`` besides the ``image`` file.
SegmentForm: type[BaseModel] = create_model(
    "SegmentForm",
    __config__=_STRICT,
    prompt=(
        str | None,
        Field(
            default=None,
            description="phrase or comma-separated phrases, e.g. 'dog, frisbee' (required "
            "unless exemplars are given)",
        ),
    ),
    format=(Format, Field(default="rle", description=_FORMAT_HELP)),
    **_option_fields(form=True),
)

#: JSON body of ``/v1/query``.
QueryRequest: type[BaseModel] = create_model(
    "QueryRequest",
    __config__=_STRICT,
    index_id=(str, Field(description="the id /v1/index returned", max_length=128)),
    prompt=(
        str | list[str] | None,
        Field(default=None, description="a phrase, comma-separated phrases or a list"),
    ),
    format=(Format, Field(default="rle", description=_FORMAT_HELP)),
    **_option_fields(form=False),
)


def query_options(values: Mapping[str, Any], base: QueryOptions) -> QueryOptions:
    """The :class:`QueryOptions` of a request: ``base`` with the knobs the request set.

    Args:
        values: The validated request model's fields (``model.model_dump()``); other keys
            (``prompt``, ``index_id``, ``format``) are ignored.
        base: The server's defaults.

    Returns:
        The validated value.

    Raises:
        ValueError: A bad value (``QueryOptions``' message names the knob and the range).
    """
    changes: dict[str, Any] = {}
    for f in query_fields():
        value = values.get(f.name)
        if value is None:
            continue
        if _kind(f) == "optional_int" and value == 0:
            value = None
        changes[f.name] = value
    return base.replace(**changes)


def error_message(errors: list[dict[str, Any]]) -> str:
    """One line from pydantic's errors: ``field: problem; field: problem``."""
    parts = []
    for err in errors[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query"))
        if err.get("type") == "extra_forbidden":
            parts.append(f"unknown field {loc!r} (see /docs for the fields of this route)")
        elif err.get("type") == "json_invalid" and loc and not loc.isdigit():
            parts.append(f"{loc}: not valid JSON text (e.g. [[10, 20, 60, 90]])")
        elif err.get("type") == "json_invalid":
            parts.append(f"the body is not valid JSON ({err.get('ctx', {}).get('error', '')})")
        else:
            parts.append(f"{loc or 'body'}: {err.get('msg', 'invalid')}")
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return "; ".join(parts) + more


#: A JSON object of query knobs only (Label Studio's extra params and per-request params, a
#: CVAT function's ``GROUNDED_SAM_OPTIONS``): the members of ``/v1/query`` without ``index_id``,
#: ``prompt`` and ``format``.
QueryOptionsBody: type[BaseModel] = create_model(
    "QueryOptionsBody", __config__=_STRICT, **_option_fields(form=False)
)
#: The same knobs given as text, as form fields are (Label Studio's tag attributes): numbers
#: and booleans as their text, box and point lists as JSON text.
_QueryOptionsText: type[BaseModel] = create_model(
    "QueryOptionsText", __config__=_STRICT, **_option_fields(form=True)
)


def parse_query_options(
    values: Any, base: QueryOptions, *, what: str = "options", text: bool = False
) -> QueryOptions:
    """Validate a JSON object of query knobs the way ``/v1/query`` does, over ``base``.

    Args:
        values: A mapping (or its JSON text) of :class:`QueryOptions` field names to values,
            e.g. ``{"threshold": 0.4, "top_k": 3}``; None or empty: ``base``.
        base: The defaults the knobs change.
        what: What the values are, for messages (e.g. ``"the model's Extra params"``).
        text: The values are text, as in a multipart form or XML attributes (``"0.4"``,
            ``"true"``, ``"[[10, 20, 60, 90]]"``), not JSON values.

    Returns:
        The validated value.

    Raises:
        ValueError: Not an object, an unknown knob or a bad value; one line naming it.
    """
    if values is None or values == "" or values == {}:
        return base
    if isinstance(values, (str, bytes)):
        try:
            values = json.loads(values)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{what} is not valid JSON ({exc.msg} at {exc.pos}).") from None
    if not isinstance(values, Mapping):
        raise ValueError(
            f"{what} must be a JSON object of query options such as "
            f'{{"threshold": 0.4, "top_k": 3}}, got {type(values).__name__}.'
        )
    try:
        model = (_QueryOptionsText if text else QueryOptionsBody).model_validate(dict(values))
    except ValidationError as exc:
        errors = exc.errors()
        names = ""
        if any(e.get("type") == "extra_forbidden" for e in errors):
            names = f" (query options: {', '.join(f.name for f in query_fields())})"
        raise ValueError(f"{what}: {error_message(errors)}{names}") from None
    try:
        return query_options(model.model_dump(), base)
    except ValueError as exc:
        raise ValueError(f"{what}: {exc}") from None


class IndexRef(BaseModel):
    """A request on an index that ``/v1/index`` made."""

    model_config = _STRICT
    index_id: str = Field(description="the id /v1/index returned", max_length=128)
    format: Format = Field(default="rle", description=_FORMAT_HELP)


class PredictRequest(IndexRef):
    """SAM's geometric prompts on an index (``/v1/predict``); coordinates in original pixels."""

    points: list[list[float]] | None = Field(default=None, description="[[x, y], ...] clicks")
    labels: list[int] | None = Field(
        default=None, description="1 foreground / 0 background per point (default all 1)"
    )
    box: list[float] | list[list[float]] | None = Field(
        default=None, description="[x1, y1, x2, y2], or a list of boxes decoded together"
    )
    multimask_output: bool = Field(
        default=True, description="three masks (whole, part, sub-part) per prompt"
    )


def _everything_fields() -> dict[str, Any]:
    from grounded_sam.sam.everything import EverythingSettings

    out = {}
    for f in dataclasses.fields(EverythingSettings):
        if f.name == "max_proposals":
            continue
        kind = _kind(f)
        typ = {"float": float, "int": int}.get(kind)
        if typ is None:
            raise TypeError(f"EverythingSettings.{f.name}: no request field kind for {f.type!r}")
        out[f.name] = (
            typ | None,
            Field(default=None, description=f"absent: Meta's default ({f.default!r})"),
        )
    return out


#: JSON body of ``/v1/everything``: the index plus any ``EverythingSettings`` knob.
EverythingRequest: type[IndexRef] = create_model(
    "EverythingRequest", __base__=IndexRef, **_everything_fields()
)


def everything_settings(values: Mapping[str, Any]) -> dict[str, Any]:
    """The ``EverythingSettings`` knobs a ``/v1/everything`` request set (absent ones left out)."""
    names = _everything_fields()
    return {k: v for k, v in values.items() if k in names and v is not None}


def multipart_schema() -> dict[str, Any]:
    """The OpenAPI ``requestBody`` of ``/v1/segment`` and ``/v1/index``'s image part.

    Returns:
        ``{"segment": requestBody, "index": requestBody}`` (multipart/form-data).
    """
    form = SegmentForm.model_json_schema()
    image = {"type": "string", "format": "binary", "description": "the image file"}
    segment = {
        "type": "object",
        "required": ["image"],
        "properties": {"image": image, **form.get("properties", {})},
    }
    index = {"type": "object", "required": ["image"], "properties": {"image": image}}

    def body(schema: dict[str, Any]) -> dict[str, Any]:
        if "$defs" in form:
            schema = {**schema, "$defs": form["$defs"]}
        return {"required": True, "content": {"multipart/form-data": {"schema": schema}}}

    return {"segment": body(segment), "index": body(index)}
