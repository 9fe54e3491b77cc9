"""Query options of a Label Studio request: the model's extra params, the tag, the request.

Label Studio's ML backends take their settings from three places, and so does this one (each
later one wins, knob by knob, over the server's defaults, the query flags of ``grounded-sam
serve``):

1. the ML backend's *extra params* (``MLBackend.extra_params`` in Label Studio, a JSON object
   set with the model's connection, e.g. through ``PATCH /api/ml/ID``), which Label Studio
   sends with ``/setup`` (``label_studio/ml/api_connector.py``); kept in memory per project;
2. ``model_*`` attributes of the ``BrushLabels`` / ``PolygonLabels`` tag of the labeling
   config, as label-studio-ml-backend's YOLO example reads ``model_score_threshold``:
   ``model_score_threshold`` (or ``model_threshold``) is the query threshold, and
   ``model_<option>`` any other query option (``model_top_k="3"``, ``model_refine="1"``,
   ``model_negative="shadow, reflection"``); ``model_path`` and ``model_skip`` (other
   backends' attributes) are ignored;
3. members of the ``/predict`` request's ``params`` named as query options (Label Studio
   itself sends only ``login``, ``password`` and ``context`` there; a script calling the
   backend can add ``{"threshold": 0.5}``); other members are ignored.

Every value goes through :func:`grounded_sam.serve.schemas.parse_query_options`, the
validation of ``/v1/query``'s members, so a bad one is refused with the same message (HTTP 422
naming where it came from).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from grounded_sam.grounding.options import QueryOptions

__all__ = ["ProjectParams", "project_id", "request_options", "tag_option_attributes"]

#: Attributes of other Label Studio ML backends' configs (the YOLO example's), not ours.
FOREIGN_ATTRIBUTES = ("model_path", "model_skip")
#: Projects whose extra params are kept (least recently set ones are dropped beyond it).
MAX_PROJECTS = 1024
#: Largest extra params kept per project, as compact JSON (the knobs' own limits allow less:
#: 128 negative phrases of 300 characters, 1024 points); at most 64 MiB for MAX_PROJECTS.
MAX_EXTRA_PARAMS_BYTES = 64 * 1024


def _knobs() -> list[str]:
    from grounded_sam.grounding.options import query_fields

    return [f.name for f in query_fields()]


def project_id(project: Any) -> str | None:
    """The project id of Label Studio's ``project`` member (``"12.1764756000"`` -> ``"12"``)."""
    if project is None or isinstance(project, bool):
        return None
    text = str(project).split(".", 1)[0].strip()
    return text or None


def tag_option_attributes(attrib: Mapping[str, str], tag: str) -> tuple[tuple[str, str], ...]:
    """The query options a control tag's ``model_*`` attributes set: ``((knob, text), ...)``.

    Raises:
        ValueError: A ``model_*`` attribute that names no query option.
    """
    names = _knobs()
    found = []
    for key, value in attrib.items():
        if not key.startswith("model_") or key in FOREIGN_ATTRIBUTES:
            continue
        knob = "threshold" if key == "model_score_threshold" else key[len("model_") :]
        if knob not in names:
            raise ValueError(
                f"The {tag!r} tag has the attribute {key}={value!r}, which names no query "
                f"option: use model_score_threshold or model_<option>, the options being "
                f"{', '.join(names)}."
            )
        found.append((knob, value))
    return tuple(found)


class ProjectParams:
    """The extra params Label Studio sent with ``/setup``, per project (bounded, in memory).

    What is kept is the parsed JSON object (not the text Label Studio sent, which may be
    padded), at most ``max_bytes`` of compact JSON per project and ``max_projects`` projects.
    """

    def __init__(
        self, max_projects: int = MAX_PROJECTS, max_bytes: int = MAX_EXTRA_PARAMS_BYTES
    ) -> None:
        self.max_projects = max_projects
        self.max_bytes = max_bytes
        self._params: OrderedDict[str, dict[str, Any]] = OrderedDict()

    def set(self, project: Any, extra_params: Any, base: QueryOptions) -> None:
        """Check and keep a project's extra params (None or ``{}`` forgets them).

        Raises:
            ValueError: Not a JSON object of query options, a bad value, or over
                ``max_bytes`` of JSON.
        """
        import json

        from grounded_sam.serve.schemas import parse_query_options

        parse_query_options(extra_params, base, what=EXTRA_PARAMS)  # refuse bad ones at once
        if isinstance(extra_params, (str, bytes)) and extra_params:
            extra_params = json.loads(extra_params)  # valid: parse_query_options read it
        if extra_params:
            size = len(json.dumps(extra_params, separators=(",", ":")).encode())
            if size > self.max_bytes:
                raise ValueError(
                    f"{EXTRA_PARAMS} are {size:,} bytes of JSON; the limit is "
                    f"{self.max_bytes:,}: set only the query options the project changes."
                )
        key = project_id(project)
        if key is None:
            return
        if not extra_params:
            self._params.pop(key, None)
            return
        self._params[key] = dict(extra_params)
        self._params.move_to_end(key)
        while len(self._params) > self.max_projects:
            self._params.popitem(last=False)

    def get(self, project: Any) -> Any:
        """The extra params kept for ``project``, or None."""
        key = project_id(project)
        return None if key is None else self._params.get(key)


EXTRA_PARAMS = "the model's extra params (sent by Label Studio with /setup)"


def request_options(
    base: QueryOptions,
    *,
    extra_params: Any = None,
    tag_options: tuple[tuple[str, str], ...] = (),
    tag: str = "",
    params: Mapping[str, Any] | None = None,
) -> QueryOptions:
    """The options of one ``/predict`` request: ``base``, then the three sources in order.

    Args:
        base: The server's defaults.
        extra_params: The project's extra params (a JSON object or its text), or None.
        tag_options: What :func:`tag_option_attributes` read from the tag.
        tag: The tag's name (for messages).
        params: The request's ``params``; only members named as query options are read.

    Raises:
        ValueError: A bad value; the message says where it came from.
    """
    from grounded_sam.serve.schemas import parse_query_options

    options = parse_query_options(extra_params, base, what=EXTRA_PARAMS)
    if tag_options:
        options = parse_query_options(
            dict(tag_options), options, what=f"the {tag!r} tag's model_* attributes", text=True
        )
    names = set(_knobs())
    asked = {k: v for k, v in (params or {}).items() if k in names and v is not None}
    return parse_query_options(asked, options, what="the request's params")
