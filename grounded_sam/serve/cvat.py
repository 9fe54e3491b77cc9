"""A CVAT serverless function (Nuclio): ``init_context(context)`` and ``handler(context, event)``.

CVAT runs automatic annotation models as Nuclio functions (``serverless/`` in cvat-ai/cvat).
A *detector* function declares its labels in ``function.yaml`` (``metadata.annotations.spec``,
a JSON list of ``{"name", "type"}``), and CVAT's lambda manager
(``cvat/apps/lambda_manager/views.py``) posts ``{"image": base64 JPEG/PNG, "threshold": float}``
(``threshold`` only when the user set one) and reads back a JSON list of shapes
``{"confidence", "label", "type", "points", "mask"?}``. For ``"type": "mask"`` CVAT reads
``mask``: the 0/1 values of the mask cropped to its bounding box, row by row, followed by
``[xtl, ytl, xbr, ybr]`` (inclusive pixel corners), as its Mask R-CNN function's
``to_cvat_mask`` writes it; and ``points``, a flat ``[x1, y1, x2, y2, ...]`` polygon used when
the user asks CVAT to convert masks to polygons.

This module is the function's ``main.py`` (``handler: grounded_sam.serve.cvat:handler`` in
``function.yaml``; the example is ``grounded_sam/serve/cvat_function/function.yaml``). It runs
the engine in the function's own process, as CVAT's own functions do:

* ``init_context`` loads the models once per Nuclio worker and reads the labels. Each label's
  phrase is its ``"prompt"`` member when given (CVAT ignores extra members), else its name with
  ``_`` read as a space (``traffic_light`` -> ``"traffic light"``); shapes carry the name. A
  label's ``type`` picks the shape: ``mask`` (default), ``polygon`` (the outline of the mask,
  its parts joined) or ``rectangle`` (the box).
* ``handler`` decodes the image (at most ``GROUNDED_SAM_MAX_IMAGE_PIXELS``), runs one
  ``segment`` over all the phrases and returns the shapes. ``threshold`` in the body replaces
  the query threshold. A bad body (not JSON, no base64 image, not an image, too many pixels,
  a threshold out of [0, 1]) is a 400 with ``{"error": "one line"}``; the message is logged
  too, since CVAT shows only the status.

Settings (the function's ``spec.env``):

* ``GROUNDED_SAM_SAM``, ``GROUNDED_SAM_CLIP``: the model specs (as ``--sam`` / ``--clip``;
  defaults: the package's defaults);
* ``GROUNDED_SAM_DEVICE``, ``GROUNDED_SAM_DTYPE``: as ``--device`` / ``--dtype`` (default:
  CUDA when present);
* ``GROUNDED_SAM_OPTIONS``: a JSON object of query options (``{"top_k": 5, "refine": 1}``),
  validated as ``/v1/query``'s members are;
* ``GROUNDED_SAM_PROPOSALS``: a JSON object of SAM's grid settings (``points_per_side``,
  ``pred_iou_thresh``, ...);
* ``GROUNDED_SAM_FUNCTION_YAML``: where the labels are read (default
  ``/opt/nuclio/function.yaml``, where Nuclio puts the function's configuration).
* ``GROUNDED_SAM_MAX_IMAGE_PIXELS``: the most pixels of an image (a positive integer;
  default ``4096 * 4096``); a larger one is a 400.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from grounded_sam.serve.limits import DEFAULT_MAX_IMAGE_PIXELS, decode_image

if TYPE_CHECKING:
    import supervision as sv

    from grounded_sam.grounding.options import QueryOptions
    from grounded_sam.pipeline import GroundedSAM

__all__ = [
    "CvatFunction",
    "CvatLabel",
    "cvat_mask",
    "handler",
    "init_context",
    "load_function",
    "read_labels",
    "shapes",
]

logger = logging.getLogger(__name__)

FUNCTION_YAML = "/opt/nuclio/function.yaml"
SHAPE_TYPES = ("mask", "polygon", "rectangle")


@dataclass(frozen=True)
class CvatLabel:
    """A label of the function: CVAT's ``name``, the phrase sent to the model, the shape type."""

    name: str
    phrase: str
    type: str = "mask"


def read_labels(spec: Any) -> tuple[CvatLabel, ...]:
    """The labels of a ``function.yaml`` (its parsed mapping, or the ``spec`` JSON text).

    Raises:
        ValueError: No ``metadata.annotations.spec``, not a JSON list of labels with unique
            names, or a type other than mask / polygon / rectangle.
    """
    if isinstance(spec, Mapping):
        try:
            spec = spec["metadata"]["annotations"]["spec"]
        except (KeyError, TypeError):
            raise ValueError(
                "function.yaml has no metadata.annotations.spec: list the labels there as "
                'CVAT expects, e.g. spec: \'[{"id": 0, "name": "dog", "type": "mask"}]\'.'
            ) from None
    try:
        items = json.loads(spec) if isinstance(spec, str) else spec
    except json.JSONDecodeError as exc:
        raise ValueError(f"The labels spec is not valid JSON ({exc.msg} at {exc.pos}).") from None
    if not isinstance(items, list) or not items:
        raise ValueError('The labels spec must be a non-empty JSON list of {"name": ...} labels.')
    labels = []
    for item in items:
        name = item.get("name") if isinstance(item, dict) else None
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"A label of the spec has no name: {str(item)[:80]}.")
        kind = item.get("type", "mask")
        if kind not in SHAPE_TYPES:
            raise ValueError(
                f"Label {name!r} has type {kind!r}; this function returns {', '.join(SHAPE_TYPES)}."
            )
        prompt = item.get("prompt")
        phrase = prompt if isinstance(prompt, str) and prompt.strip() else name.replace("_", " ")
        labels.append(CvatLabel(name, phrase.strip(), kind))
    if len({lab.name for lab in labels}) != len(labels):
        raise ValueError("The labels spec has a label name twice (CVAT refuses that too).")
    return tuple(labels)


# -- shapes ---------------------------------------------------------------------------------------


def cvat_mask(mask: np.ndarray) -> list[int] | None:
    """CVAT's mask list: the 0/1 values inside the mask's box, row-major, then the box.

    Args:
        mask: (H, W) bool.

    Returns:
        ``[v, ..., xtl, ytl, xbr, ybr]`` (inclusive corners, pixels), or None when empty.
    """
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    xtl, ytl, xbr, ybr = int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())
    values = mask[ytl : ybr + 1, xtl : xbr + 1].astype(np.uint8).ravel().tolist()
    return [*values, xtl, ytl, xbr, ybr]


def _polygon(mask: np.ndarray) -> list[float] | None:
    """A flat ``[x1, y1, ...]`` outline of the mask (its parts joined), or None."""
    import supervision as sv

    from grounded_sam.export.single_part import join_mask_parts

    polygons = sv.mask_to_polygons(join_mask_parts(mask))
    if not polygons:
        return None
    poly = max(polygons, key=len)
    if len(poly) < 3:
        return None
    return [float(v) for v in poly.astype(float).ravel().tolist()]


def shapes(dets: sv.Detections, labels: tuple[CvatLabel, ...]) -> list[dict[str, Any]]:
    """CVAT detector shapes of detections whose ``class_id`` indexes ``labels``.

    Args:
        dets: Detections with masks (N, H, W) bool, ``xyxy`` pixels, ``confidence``.
        labels: The function's labels (the phrases were sent in this order).

    Returns:
        One shape per detection, highest confidence first; empty masks are left out.
    """
    if len(dets) == 0:
        return []
    conf = np.nan_to_num(
        dets.confidence if dets.confidence is not None else np.zeros(len(dets)), nan=0.0
    )
    out = []
    for i in np.argsort(-conf, kind="stable").tolist():
        label = labels[0 if dets.class_id is None else int(dets.class_id[i])]
        shape: dict[str, Any] = {
            "confidence": str(float(conf[i])),
            "label": label.name,
            "type": label.type,
        }
        mask = dets.mask[i] if dets.mask is not None else None
        if label.type == "rectangle":
            shape["points"] = [float(v) for v in dets.xyxy[i].tolist()]
        elif mask is None:
            continue
        elif label.type == "polygon":
            points = _polygon(mask)
            if points is None:
                continue
            shape["points"] = points
        else:
            flat = cvat_mask(mask)
            if flat is None:
                continue
            shape["mask"] = flat
            points = _polygon(mask)
            if points is not None:  # CVAT's "convert masks to polygons" reads these
                shape["points"] = points
        out.append(shape)
    return out


# -- the function ---------------------------------------------------------------------------------


class CvatFunction:
    """What one Nuclio worker holds: the engine, the labels and the query options.

    Args:
        gs: The loaded engine.
        labels: The function's labels.
        options: Query options (None: the engine's).
        max_image_pixels: Most pixels of an image (400 beyond).
    """

    def __init__(
        self,
        gs: GroundedSAM,
        labels: tuple[CvatLabel, ...],
        options: QueryOptions | None = None,
        max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    ) -> None:
        from grounded_sam.inputs import parse_prompt

        if not labels:
            raise ValueError("A CVAT function needs at least one label.")
        self.phrases = parse_prompt([lab.phrase for lab in labels], what="labels' phrases")
        if len(self.phrases) != len(labels):
            raise ValueError(
                'Two labels of the spec have the same phrase: give one a different "prompt".'
            )
        self.gs = gs
        self.labels = tuple(labels)
        self.options = options if options is not None else gs.options
        self.max_image_pixels = max_image_pixels

    def detect(self, body: Any) -> list[dict[str, Any]]:
        """The shapes for one request body (``{"image": base64, "threshold"?: float}``).

        Raises:
            ValueError: A body that is not JSON, no or bad ``image``, a bad ``threshold``
                or an image that is not one or has too many pixels.
        """
        from grounded_sam.serve.schemas import parse_query_options

        if isinstance(body, (bytes, bytearray, str)):
            try:
                body = json.loads(body or b"null")
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise ValueError("The request body is not JSON: send {'image': base64}.") from None
        if not isinstance(body, dict) or not isinstance(body.get("image"), str):
            raise ValueError("The request has no image: send {'image': base64 JPEG or PNG}.")
        try:
            data = base64.b64decode(body["image"], validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("image is not base64 text.") from None
        options = self.options
        if body.get("threshold") is not None:
            options = parse_query_options(
                {"threshold": body["threshold"]}, options, what="the request's threshold"
            )
        image = decode_image(data, max_pixels=self.max_image_pixels, name="the image")
        dets = self.gs.segment(image, self.phrases, options)
        return shapes(dets, self.labels)


def load_function(environ: Mapping[str, str] | None = None) -> CvatFunction:
    """Load the engine and the labels from the function's settings (see the module doc).

    Args:
        environ: The settings (None: ``os.environ``).

    Raises:
        ValueError: Bad labels or settings. grounded_sam.errors.ModelLoadError: A model
            could not be loaded.
    """
    import yaml

    from grounded_sam import EverythingSettings, GroundedSAM
    from grounded_sam.serve.schemas import parse_query_options

    env = os.environ if environ is None else environ
    path = Path(env.get("GROUNDED_SAM_FUNCTION_YAML") or FUNCTION_YAML)
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(
            f"Cannot read the function's labels from {path} ({exc.strerror}): set "
            "GROUNDED_SAM_FUNCTION_YAML to its function.yaml."
        ) from None
    labels = read_labels(config)
    kwargs: dict[str, Any] = {}
    for key, arg in (("SAM", "sam"), ("CLIP", "clip"), ("DEVICE", "device"), ("DTYPE", "dtype")):
        if env.get(f"GROUNDED_SAM_{key}"):
            kwargs[arg] = env[f"GROUNDED_SAM_{key}"]
    proposals = env.get("GROUNDED_SAM_PROPOSALS")
    if proposals:
        try:
            kwargs["proposal_settings"] = EverythingSettings(**json.loads(proposals))
        except (json.JSONDecodeError, TypeError) as exc:
            raise ValueError(
                f"GROUNDED_SAM_PROPOSALS must be a JSON object of EverythingSettings knobs "
                f'such as {{"points_per_side": 16}} ({exc}).'
            ) from None
    asked_pixels = env.get("GROUNDED_SAM_MAX_IMAGE_PIXELS") or str(DEFAULT_MAX_IMAGE_PIXELS)
    try:
        max_pixels = int(asked_pixels)
    except ValueError:
        max_pixels = 0
    if max_pixels <= 0:
        raise ValueError(
            f"GROUNDED_SAM_MAX_IMAGE_PIXELS must be a positive integer (the most pixels of an "
            f"image, default {DEFAULT_MAX_IMAGE_PIXELS}), got {asked_pixels!r}."
        )
    from grounded_sam.grounding.options import QueryOptions

    asked = env.get("GROUNDED_SAM_OPTIONS")
    parse_query_options(asked, QueryOptions(), what="GROUNDED_SAM_OPTIONS")  # before the load
    gs = GroundedSAM.from_pretrained(**kwargs)
    options = parse_query_options(asked, gs.options, what="GROUNDED_SAM_OPTIONS")
    return CvatFunction(gs, labels, options, max_image_pixels=max_pixels)


def init_context(context: Any) -> None:
    """Nuclio's start-up hook: load the models and labels into ``context.user_data``."""
    context.logger.info("grounded-sam: loading the models")
    context.user_data.function = load_function()
    labels = ", ".join(f"{lab.name} ({lab.phrase!r})" for lab in context.user_data.function.labels)
    context.logger.info(f"grounded-sam: ready; labels {labels}")


def _reply(context: Any, body: Any, status: int) -> Any:
    return context.Response(
        body=json.dumps(body), headers={}, content_type="application/json", status_code=status
    )


def handler(context: Any, event: Any) -> Any:
    """Nuclio's request hook: CVAT's detector request in, its shapes (JSON list) out."""
    function: CvatFunction = context.user_data.function
    try:
        return _reply(context, function.detect(event.body), 200)
    except (ValueError, TypeError) as exc:
        status = 400
        message = " ".join(str(exc).split()) or type(exc).__name__
        context.logger.warn(f"grounded-sam: refused a request ({status}): {message}")
        return _reply(context, {"error": message}, status)
