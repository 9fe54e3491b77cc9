"""One frozen, self-validating value for every per-query knob.

:class:`QueryOptions` is the single place a query knob is declared, documented, defaulted and
validated. Everything else derives from it: ``GroundedSAM.query`` (its keyword arguments are
:meth:`QueryOptions.replace` overrides of the engine's defaults), the CLI option groups
(:mod:`grounded_sam.cli.options`, from :func:`query_fields` and each field's ``metadata``:
flag, help, group, choices, metavar), the labeling run config and the Ray
labeler (:meth:`QueryOptions.to_dict` / :meth:`QueryOptions.from_dict`), the web app and an
HTTP schema. A new knob is added here once.

A value is validated when it is made (and by :meth:`~QueryOptions.replace`, which makes a new
one), so code holding a ``QueryOptions`` never checks a knob again. What depends on one image
(points and exemplar boxes inside that image, negatives that clash with the query's phrases)
is checked at query time by :meth:`QueryOptions.check_for_image` /
:meth:`QueryOptions.negatives_for`.

The module imports no torch: the CLI builds ``--help`` from it.

Thread safety: values are immutable (tuples and frozen fields only), so one value may be
shared by any number of threads and requests.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from grounded_sam import limits
from grounded_sam.inputs import parse_prompt

__all__ = [
    "CALIBRATIONS",
    "DEFAULT_PART_THRESH",
    "QueryOptions",
    "query_fields",
    "query_phrases",
]

#: Calibration modes (see :func:`grounded_sam.grounding.scoring.score_phrases`).
CALIBRATIONS = ("joint", "per_phrase")

DEFAULT_PART_THRESH = 0.8
"""A mask with more than this fraction of its pixels inside a larger mask of the same label
is a part of that object (and a duplicate of it unless parts are asked for)."""

Box = tuple[float, float, float, float]
Point = tuple[float, float]


def _meta(
    help: str,
    *,
    cli: str | None = None,
    per_image: bool = False,
    group: str = "detection",
    choices: tuple[str, ...] | None = None,
    metavar: str | None = None,
) -> dict[str, Any]:
    """Field metadata of a knob (what :mod:`grounded_sam.cli.options` builds the flags from).

    Args:
        help: One line for ``--help`` and the docs.
        cli: The CLI flag (None: not a CLI flag of its own).
        per_image: The knob belongs to one image (points, exemplars and the exemplars' label:
            not part of a labeling run's config, not offered by the commands over many
            images or over one image at a time).
        group: The ``--help`` section of the flag: ``"detection"`` or ``"grounding"``.
        choices: The allowed values of a string knob (the CLI offers exactly these).
        metavar: How ``--help`` shows the flag's value (None: argparse's default).
    """
    return {
        "help": help,
        "cli": cli,
        "per_image": per_image,
        "group": group,
        "choices": choices,
        "metavar": metavar,
    }


@dataclass(frozen=True)
class QueryOptions:
    """Every knob of a text query, validated on construction.

    Attributes:
        threshold: Minimum ``confidence`` (calibrated CLIP probability) of a detection, in
            [0, 1].
        top_k: Maximum detections per phrase, counted after de-duplication; None for no
            limit (at most :data:`grounded_sam.limits.MAX_TOP_K`).
        refine: Extra SAM decoder passes that feed each mask back with its box (0: box
            prompt only; at most :data:`grounded_sam.limits.MAX_REFINE`).
        min_region_area: Remove islands and fill holes smaller than this many pixels in the
            final masks (0: off).
        negative: Phrases that must not be returned: a region whose best match is one of
            them is never returned. Given as ``"handle, saucer"`` or a list; kept as a tuple.
        calibration: ``"joint"`` (one softmax over phrases, negatives and background) or
            ``"per_phrase"`` (each phrase against the negatives and background only).
        keep_parts: Keep masks that are parts of a larger mask with the same label.
        part_thresh: A mask with more than this fraction of its pixels inside a larger
            same-label mask is a part, in [0, 1].
        exemplars: "More like this": xyxy boxes (original pixels) around example objects, or
            None. At most :data:`grounded_sam.limits.MAX_EXEMPLARS` boxes.
        negative_exemplars: xyxy boxes (original pixels) around objects that must not be
            found, or None. SAM 3 only: they join every prompt of the query (each phrase's and
            the exemplars') as SAM 3 exemplar boxes with label 0; the CLIP grounder refuses
            them. At most :data:`grounded_sam.limits.MAX_EXEMPLARS` boxes.
        exemplar_label: Class name of exemplar matches.
        points: (x, y) clicks in original pixels mixed with the text, or None: a region must
            contain a foreground click and no background click. At most
            :data:`grounded_sam.limits.MAX_POINTS_PER_CALL`.
        point_labels: One label per point, 1 foreground / 0 background (None: all 1).
    """

    threshold: float = field(
        default=0.3,
        metadata=_meta(
            "minimum confidence (calibrated CLIP probability) of a detection", cli="--threshold"
        ),
    )
    top_k: int | None = field(
        default=20,
        metadata=_meta("at most this many detections per phrase (0: no limit)", cli="--top-k"),
    )
    refine: int = field(
        default=1,
        metadata=_meta(
            "extra SAM passes that refine each mask's edges (0: box prompt only)", cli="--refine"
        ),
    )
    min_region_area: int = field(
        default=0,
        metadata=_meta(
            "remove mask islands and fill holes smaller than this many pixels (0: off)",
            cli="--min-region-area",
        ),
    )
    negative: tuple[str, ...] = field(
        default=(),
        metadata=_meta(
            "comma-separated phrases to exclude, e.g. 'handle, saucer': a region that best "
            "matches one of them is never returned",
            cli="--negative",
            group="grounding",
            metavar="PHRASES",
        ),
    )
    calibration: str = field(
        default="joint",
        metadata=_meta(
            "joint: one softmax over all phrases + background (a similar phrase lowers "
            "another's confidence); per_phrase: each phrase vs the background only",
            cli="--calibration",
            group="grounding",
            choices=CALIBRATIONS,
        ),
    )
    keep_parts: bool = field(
        default=False,
        metadata=_meta(
            "also return masks that are parts of a larger mask with the same label",
            cli="--keep-parts",
            group="grounding",
        ),
    )
    part_thresh: float = field(
        default=DEFAULT_PART_THRESH,
        metadata=_meta(
            "a mask with more than this fraction of its pixels inside a larger mask of the "
            "same label is a part of it",
            cli="--part-thresh",
            group="grounding",
        ),
    )
    exemplars: tuple[Box, ...] | None = field(
        default=None,
        metadata=_meta(
            "box around an example object: find all regions like it (repeatable; several "
            "are averaged; --prompt becomes optional)",
            cli="--exemplar",
            per_image=True,
            group="grounding",
            metavar="X1,Y1,X2,Y2",
        ),
    )
    negative_exemplars: tuple[Box, ...] | None = field(
        default=None,
        metadata=_meta(
            "box around an object that must NOT be found (repeatable; SAM 3 checkpoints "
            "only: its exemplar prompts with box label 0)",
            cli="--negative-exemplar",
            per_image=True,
            group="grounding",
            metavar="X1,Y1,X2,Y2",
        ),
    )
    exemplar_label: str = field(
        default="exemplar",
        metadata=_meta(
            "class name given to regions found by --exemplar",
            cli="--exemplar-label",
            per_image=True,
            group="grounding",
        ),
    )
    points: tuple[Point, ...] | None = field(
        default=None,
        metadata=_meta("(x, y) clicks mixed with the text", per_image=True),
    )
    point_labels: tuple[int, ...] | None = field(
        default=None,
        metadata=_meta("1 foreground / 0 background per point", per_image=True),
    )

    def __post_init__(self) -> None:
        from grounded_sam.inputs import check_int, check_number, check_phrase, parse_prompt

        def put(name: str, value: object) -> None:
            object.__setattr__(self, name, value)

        put("threshold", check_number("threshold", self.threshold, 0.0, 1.0))
        if self.top_k is not None:
            put(
                "top_k",
                check_int("top_k", self.top_k, 1, limits.MAX_TOP_K, limits.REASONS["top_k"]),
            )
        put(
            "refine",
            check_int("refine", self.refine, 0, limits.MAX_REFINE, limits.REASONS["refine"]),
        )
        area = check_int("min_region_area", self.min_region_area, 0)  # "must be >= 0"
        put(
            "min_region_area",
            check_int(
                "min_region_area",
                area,
                0,
                limits.MAX_IMAGE_PIXELS,
                "larger than any accepted image",
            ),
        )
        negative = self.negative
        if negative is None or (isinstance(negative, str) and not negative.strip()):
            negative = ()
        elif not isinstance(negative, str) and not isinstance(negative, Sequence):
            raise ValueError(
                f"negative must be phrases ('handle, saucer' or a list), got "
                f"{type(negative).__name__}."
            )
        put("negative", tuple(parse_prompt(negative)) if len(negative) else ())
        if not isinstance(self.calibration, str) or self.calibration not in CALIBRATIONS:
            raise ValueError(
                f"calibration must be one of {', '.join(map(repr, CALIBRATIONS))}, got "
                f"{self.calibration!r}."
            )
        put("keep_parts", _check_bool("keep_parts", self.keep_parts))
        put("part_thresh", check_number("part_thresh", self.part_thresh, 0.0, 1.0))
        if not isinstance(self.exemplar_label, str):
            raise ValueError(
                f"exemplar_label must be a string, got {type(self.exemplar_label).__name__}."
            )
        label = check_phrase(self.exemplar_label)
        if not label:
            raise ValueError("exemplar_label is empty: give a class name such as 'mug'.")
        put("exemplar_label", label)
        if self.exemplars is not None:
            put("exemplars", _boxes(self.exemplars))
        if self.negative_exemplars is not None:
            put("negative_exemplars", _boxes(self.negative_exemplars, "negative_exemplars"))
        if self.points is not None:
            pts, lab = _points(self.points, self.point_labels)
            put("points", pts)
            put("point_labels", lab)
        elif self.point_labels is not None:
            raise ValueError("point_labels were given without points: give points=[[x, y]].")

    # -- making values ------------------------------------------------------------------------

    def replace(self, **changes: Any) -> QueryOptions:
        """A new, validated value with some knobs changed (unknown names are refused).

        Args:
            **changes: Field names and their new values.

        Returns:
            The new value (``self`` when nothing changes).

        Raises:
            TypeError: An unknown knob (the message lists the known ones).
            ValueError: A bad value (the message names the knob and the allowed range).
        """
        if not changes:
            return self
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise TypeError(
                f"Unknown query option(s) {', '.join(map(repr, unknown))}; the options are: "
                f"{', '.join(sorted(known))}."
            )
        return dataclasses.replace(self, **changes)

    def to_dict(self, *, per_image: bool = True) -> dict[str, Any]:
        """A JSON-ready dict of every knob (tuples as lists).

        Args:
            per_image: Include the per-image prompts (``points``, ``point_labels``,
                ``exemplars``, ``exemplar_label``); a labeling run's config leaves them out.

        Returns:
            ``{name: value}``; :meth:`from_dict` reads it back.
        """
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if not per_image and f.metadata["per_image"]:
                continue
            out[f.name] = _jsonable(getattr(self, f.name))
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> QueryOptions:
        """Read a dict written by :meth:`to_dict` (missing knobs take their defaults).

        Raises:
            ValueError: Not a mapping, an unknown knob, or a bad value.
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"query options must be a mapping, got {type(data).__name__}.")
        try:
            return cls().replace(**dict(data))
        except TypeError as exc:
            raise ValueError(str(exc)) from None

    # -- per-image checks -------------------------------------------------------------------

    @property
    def per_image(self) -> bool:
        """Whether the value holds per-image prompts (points or exemplars)."""
        return (
            self.points is not None
            or self.exemplars is not None
            or self.negative_exemplars is not None
        )

    def negatives_for(self, phrases: Sequence[str]) -> list[str]:
        """The negative phrases, refusing one that is also a query phrase.

        Args:
            phrases: The query's parsed phrases.

        Returns:
            The negative phrases as a list (empty when none).

        Raises:
            ValueError: A negative phrase is also a query phrase (case-insensitive).
        """
        wanted = {p.lower() for p in phrases}
        both = [n for n in self.negative if n.lower() in wanted]
        if both:
            raise ValueError(
                f"{both[0]!r} is both a phrase and a negative phrase: remove it from one of them."
            )
        return list(self.negative)

    def check_for_image(self, image_size: tuple[int, int]) -> None:
        """Refuse points or exemplar boxes that do not lie in an image of this size.

        Args:
            image_size: (H, W).

        Raises:
            ValueError: A point or box outside the image (the message gives the size).
        """
        from grounded_sam.inputs import as_boxes, as_points

        if self.points is not None:
            as_points(self.points, self.point_labels, image_size)
        if self.exemplars is not None:
            try:
                as_boxes(self.exemplars, image_size)
            except ValueError as exc:
                raise ValueError(f"Bad exemplar: {exc}") from None
        if self.negative_exemplars is not None:
            try:
                as_boxes(self.negative_exemplars, image_size)
            except ValueError as exc:
                raise ValueError(f"Bad negative exemplar: {exc}") from None


def query_fields() -> Iterator[dataclasses.Field]:
    """The fields of :class:`QueryOptions` in declaration order (with their metadata)."""
    return iter(dataclasses.fields(QueryOptions))


# -- validation helpers -------------------------------------------------------------------------


def _check_bool(name: str, value: object) -> bool:
    """A real boolean (Python or numpy); strings such as ``"no"`` are refused."""
    import numpy as np

    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise ValueError(f"{name} must be True or False, got {value!r} ({type(value).__name__}).")


def _finite_rows(
    name: str, value: object, width: int, limit: int, why: str, example: str
) -> tuple[tuple[float, ...], ...]:
    """Rows of ``width`` finite numbers, at most ``limit`` of them (one row may be flat)."""
    import numpy as np

    if isinstance(value, (str, bytes)):
        raise ValueError(f"{name} must be numbers shaped (N, {width}) as {example}, got a string.")
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"{name} must be numbers shaped (N, {width}) as {example}: {exc}"
        ) from None
    if arr.ndim == 1 and arr.shape[0] == width:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] != width or arr.shape[0] == 0:
        raise ValueError(
            f"{name} must have shape (N, {width}) as {example}, got shape {arr.shape}."
        )
    if arr.shape[0] > limit:
        raise ValueError(f"{name} has {arr.shape[0]} entries; the limit is {limit} ({why}).")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contain NaN or infinite values.")
    return tuple(tuple(float(v) for v in row) for row in arr)


def _boxes(value: object, name: str = "exemplars") -> tuple[Box, ...]:
    what = "Negative exemplar" if name == "negative_exemplars" else "Exemplar"
    rows = _finite_rows(
        name, value, 4, limits.MAX_EXEMPLARS, limits.REASONS["exemplars"],
        "[[x1, y1, x2, y2]]",
    )  # fmt: skip
    for x1, y1, x2, y2 in rows:
        if x2 < x1 or y2 < y1:
            raise ValueError(
                f"{what} box {[x1, y1, x2, y2]} has x2 < x1 or y2 < y1; boxes are "
                "[x1, y1, x2, y2] with the top-left corner first."
            )
        if x2 - x1 < 1 or y2 - y1 < 1:
            raise ValueError(
                f"{what} box {[x1, y1, x2, y2]} has no area: draw a box of at least one "
                "pixel around an example object, as [x1, y1, x2, y2]."
            )
    return rows  # type: ignore[return-value]


def _points(points: object, labels: object) -> tuple[tuple[Point, ...], tuple[int, ...]]:
    import numpy as np

    pts = _finite_rows(
        "points", points, 2, limits.MAX_POINTS_PER_CALL, limits.REASONS["points"],
        "[[x, y], ...]",
    )  # fmt: skip
    if labels is None:
        return pts, (1,) * len(pts)  # type: ignore[return-value]
    if isinstance(labels, (str, bytes)):
        raise ValueError("point_labels must be 1 (foreground) or 0 (background), got a string.")
    try:
        lab = np.asarray(labels, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise ValueError("point_labels must be 1 (foreground) or 0 (background).") from None
    if lab.shape[0] != len(pts):
        raise ValueError(
            f"Got {len(pts)} points but {lab.shape[0]} labels: give one label per point."
        )
    if not np.isin(lab, (0, 1)).all():
        raise ValueError("Point labels must be 1 (foreground) or 0 (background).")
    return pts, tuple(int(v) for v in lab)  # type: ignore[return-value]


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):  # cannot happen once validated
        raise ValueError(f"not a finite number: {value!r}")
    return value


_NO_PROMPT = (
    "Nothing to look for: give a prompt such as 'dog, cat', exemplars=[[x1, y1, x2, y2]] "
    "around an example object, or both."
)


def query_phrases(prompt: str | Sequence[str] | None, options: QueryOptions) -> list[str]:
    """A query's phrases from its prompt ([] for an exemplar-only query).

    Raises:
        ValueError: No prompt and no exemplars, or an empty prompt.
        TypeError: A prompt that is neither a string nor a list of strings.
    """
    if prompt is None:
        if options.exemplars is None:
            raise ValueError(_NO_PROMPT)
        return []
    return parse_prompt(prompt)
