"""The query knobs' command-line flags, derived from :class:`QueryOptions`.

Every flag of the ``detection`` and ``grounding`` groups is built from one
:class:`~grounded_sam.grounding.options.QueryOptions` field: its flag, help text, group,
choices and metavar come from the field's ``metadata``, its default from the dataclass
default and its kind (number, integer, on/off switch, phrases, boxes) from its type. A knob
added to ``QueryOptions`` with a ``cli`` flag shows up in every command that offers its group,
and is validated by ``QueryOptions`` only:

- each value as it is parsed (a bad one is a usage error naming the flag, exit status 2),
- the whole value once by :func:`query_options` (a ValueError, one line on stderr).

CLI conventions that differ from the Python API: an ``int | None`` knob takes 0 for None
(``--top-k 0``: no limit), a phrase list is one comma-separated string, a box list is a
repeated ``X1,Y1,X2,Y2`` flag. The module imports no torch (``--help`` is built from it).
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from grounded_sam.grounding.options import QueryOptions, query_fields

__all__ = ["GROUPS", "add_query_options", "cli_fields", "query_options"]

#: ``--help`` section title of each ``group`` of field metadata, in the order shown.
GROUPS = {"detection": "detection", "grounding": "grounding"}


def cli_fields(
    groups: Sequence[str] = tuple(GROUPS), *, per_image: bool = True
) -> Iterator[dataclasses.Field]:
    """The :class:`QueryOptions` fields that are CLI flags, in declaration order.

    Args:
        groups: Only fields of these groups (``"detection"``, ``"grounding"``).
        per_image: Include the per-image knobs (exemplars and their label); commands over
            many images, or over phrase after phrase, leave them out.
    """
    for f in query_fields():
        meta = f.metadata
        if meta["cli"] and meta["group"] in groups and (per_image or not meta["per_image"]):
            yield f


def add_query_options(
    parser: argparse.ArgumentParser,
    groups: Sequence[str] = tuple(GROUPS),
    *,
    per_image: bool = False,
) -> None:
    """Add one argument group per ``groups`` entry with the flags of :func:`cli_fields`.

    Each flag's ``dest`` is its field's name; its default is the dataclass default (shown by
    ``--help``; an empty phrase list and an absent box list as None, an ``int | None`` None
    as 0).

    Args:
        parser: The command's parser.
        groups: Which groups to add, in this order.
        per_image: Add the per-image flags (``--exemplar``, ``--exemplar-label``) too.

    Raises:
        TypeError: A field of a type this module has no flag kind for (a new knob's type must
            be taught here once).
    """
    unknown = sorted(set(groups) - set(GROUPS))
    if unknown:
        raise ValueError(f"Unknown query option group(s) {unknown}; known: {list(GROUPS)}.")
    for group in groups:
        section = parser.add_argument_group(GROUPS[group])
        for f in cli_fields((group,), per_image=per_image):
            section.add_argument(f.metadata["cli"], dest=f.name, **_argument(f))


def query_options(args: argparse.Namespace, base: QueryOptions | None = None) -> QueryOptions:
    """The :class:`QueryOptions` of the parsed flags that :func:`add_query_options` added.

    Args:
        args: The parsed namespace (fields without a flag in it keep ``base``'s values).
        base: The value to change (default: ``QueryOptions()``).

    Returns:
        The validated value.

    Raises:
        ValueError: A bad value or combination (``QueryOptions``' message).
    """
    changes: dict[str, Any] = {}
    for f in query_fields():
        if not f.metadata["cli"] or not hasattr(args, f.name):
            continue
        value = getattr(args, f.name)
        if _kind(f) == "optional_int" and value == 0:
            value = None
        elif value is None:  # an absent phrase or box list: the field's default
            continue
        changes[f.name] = value
    return (base or QueryOptions()).replace(**changes)


# -- one field -> one argparse argument ------------------------------------------------------


def _kind(f: dataclasses.Field) -> str:
    """The flag kind of a field, from its (string) type annotation."""
    kinds = {
        "float": "float",
        "int": "int",
        "int | None": "optional_int",
        "bool": "switch",
        "str": "str",
        "tuple[str, ...]": "phrases",
        "tuple[Box, ...] | None": "boxes",
    }
    try:
        return kinds[str(f.type)]
    except KeyError:
        raise TypeError(
            f"QueryOptions.{f.name} has type {f.type!r}, which has no command-line flag kind: "
            "add one in grounded_sam.cli.options."
        ) from None


def _argument(f: dataclasses.Field) -> dict[str, Any]:
    """``add_argument`` keywords of a field (help, default, type/action, choices, metavar)."""
    meta, kind = f.metadata, _kind(f)
    out: dict[str, Any] = {"help": meta["help"]}
    if meta["metavar"]:
        out["metavar"] = meta["metavar"]
    if kind == "switch":
        if f.default is not False:
            raise TypeError(f"QueryOptions.{f.name}: a CLI switch must default to False.")
        return {**out, "action": "store_true"}
    if meta["choices"]:
        out["choices"] = meta["choices"]
    if kind == "phrases":
        return {**out, "default": None, "type": _checked(f, str)}
    if kind == "boxes":
        return {**out, "default": None, "type": _checked(f, _box), "action": "append"}
    if kind == "optional_int":
        default = 0 if f.default is None else f.default
        return {**out, "default": default, "type": _checked(f, _integer)}
    parse = {"float": _number, "int": _integer, "str": str}[kind]
    return {**out, "default": f.default, "type": _checked(f, parse)}


def _checked(f: dataclasses.Field, parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse type: ``parse`` the text, then let :class:`QueryOptions` validate it.

    A ValueError becomes argparse's one-line usage error (``argument --flag: ...``).
    """
    kind = _kind(f)

    def convert(text: str) -> Any:
        value = parse(text)
        given = [value] if kind == "boxes" else value
        if kind == "optional_int":  # the CLI's spelling of None is 0
            if value < 0:
                raise argparse.ArgumentTypeError(
                    f"expected an integer >= 0 (0: no limit), got {value}"
                )
            given = None if value == 0 else value
        try:
            QueryOptions(**{f.name: given})
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc).rstrip(".")) from None
        return value

    convert.__name__ = f.name  # argparse names the type in some messages
    return convert


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def _box(text: str) -> list[float]:
    """A box ``x1,y1,x2,y2`` in pixels."""
    try:
        values = [float(v) for v in text.replace(" ", "").split(",")]
    except ValueError:
        values = []
    if len(values) != 4:
        raise argparse.ArgumentTypeError(f"expected a box as x1,y1,x2,y2 in pixels, got {text!r}")
    return values
