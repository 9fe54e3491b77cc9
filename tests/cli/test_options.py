"""The query flags are derived from QueryOptions: one declaration, every command, one check."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from grounded_sam.cli import options as cli_options
from grounded_sam.cli.main import build_parser
from grounded_sam.grounding.options import QueryOptions, query_fields
from tests.cli.test_help import subparsers

FIELDS = [f for f in query_fields() if f.metadata["cli"]]
#: Which knobs each command offers: every group; per-image ones only where one image is given.
OFFERED = {
    "segment": {f.metadata["cli"] for f in FIELDS},
    "label": {f.metadata["cli"] for f in FIELDS if not f.metadata["per_image"]},
    "shell": {f.metadata["cli"] for f in FIELDS if not f.metadata["per_image"]},
    "serve": {f.metadata["cli"] for f in FIELDS if not f.metadata["per_image"]},
    "app": {f.metadata["cli"] for f in FIELDS if f.metadata["group"] == "detection"},
}
ALL_FLAGS = {f.metadata["cli"] for f in FIELDS}


def query_actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """The parser's actions whose flag is a QueryOptions flag, by flag."""
    return {s: a for a in parser._actions for s in a.option_strings if s in ALL_FLAGS}


def test_the_knobs_that_are_cli_flags() -> None:
    # guards the test itself: a knob losing its flag must be a visible change
    assert {
        "--threshold", "--top-k", "--refine", "--min-region-area", "--negative",
        "--calibration", "--keep-parts", "--part-thresh", "--exemplar", "--exemplar-label",
        "--negative-exemplar",
    } == ALL_FLAGS  # fmt: skip
    per_image = {"--exemplar", "--exemplar-label", "--negative-exemplar"}
    assert per_image == ALL_FLAGS - OFFERED["label"]


@pytest.mark.parametrize("command", sorted(OFFERED))
def test_each_command_offers_exactly_the_derived_flags(command: str) -> None:
    parser = subparsers()[command]
    actions = query_actions(parser)
    assert set(actions) == OFFERED[command]
    text = " ".join(parser.format_help().split())
    by_flag = {f.metadata["cli"]: f for f in FIELDS}
    for flag, action in actions.items():
        f = by_flag[flag]
        assert flag in text and action.dest == f.name
        assert action.help == f.metadata["help"]
        assert action.choices == f.metadata["choices"]  # e.g. calibration's modes
        shown = None if f.default in ((), None) else f.default  # absent lists: None
        assert action.default == shown, flag


def test_defaults_and_every_flag_build_one_query_options() -> None:
    parse = build_parser().parse_args
    args = parse(["segment", "x.jpg", "-p", "cup"])
    assert cli_options.query_options(args) == QueryOptions()
    args = parse(["segment", "x.jpg", "-p", "cup", "--threshold", "0.5", "--top-k", "0",
                  "--refine", "2", "--min-region-area", "7", "--negative", "handle, saucer",
                  "--calibration", "per_phrase", "--keep-parts", "--part-thresh", "0.6",
                  "--exemplar", "1,2,30,40", "--exemplar", "5,5,9,9",
                  "--exemplar-label", "jar"])  # fmt: skip
    assert cli_options.query_options(args) == QueryOptions(
        threshold=0.5, top_k=None, refine=2, min_region_area=7, negative=("handle", "saucer"),
        calibration="per_phrase", keep_parts=True, part_thresh=0.6,
        exemplars=[[1, 2, 30, 40], [5, 5, 9, 9]], exemplar_label="jar",
    )  # fmt: skip
    # a command without a knob's flag keeps the base value's knob
    base = QueryOptions(negative="lid", threshold=0.9)
    args = parse(["app", "--threshold", "0.2"])
    assert cli_options.query_options(args, base) == base.replace(threshold=0.2)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--threshold", "x"], "argument --threshold: expected a number, got 'x'"),
        (["--threshold", "nan"], "argument --threshold: threshold must be a number, got NaN"),
        (["--refine", "1.5"], "argument --refine: expected an integer"),
        (["--refine", "99"], "argument --refine: refine must be in [0,"),
        (["--top-k", "-2"], "argument --top-k: expected an integer >= 0 (0: no limit)"),
        (["--top-k", "100000"], "argument --top-k: top_k must be in [1,"),
        (["--part-thresh", "1.5"], "argument --part-thresh: part_thresh must be in [0, 1]"),
        (["--calibration", "soft"], "argument --calibration: calibration must be one of"),
        (["--exemplar", "9,9,1,1"], "argument --exemplar: Exemplar box"),
        (["--exemplar-label", " "], "argument --exemplar-label: exemplar_label is empty"),
    ],
)
def test_a_bad_value_is_a_usage_error_with_the_query_options_message(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["segment", "x.jpg", "-p", "cup", *argv])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_the_namespace_is_validated_by_query_options_itself() -> None:
    args = build_parser().parse_args(["shell", "x.jpg"])
    args.threshold = 5.0  # not through the parser: QueryOptions still refuses it
    with pytest.raises(ValueError, match=r"threshold must be in \[0, 1\], got 5"):
        cli_options.query_options(args)


def test_a_new_knob_shows_up_in_every_command_without_cli_changes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    extended = dataclasses.make_dataclass(
        "Extended",
        [("max_overlap", "float", dataclasses.field(default=0.25, metadata={
            "help": "a new knob", "cli": "--max-overlap", "per_image": False,
            "group": "grounding", "choices": None, "metavar": None}))],
        bases=(QueryOptions,),
        frozen=True,
    )  # fmt: skip
    monkeypatch.setattr(cli_options, "query_fields", lambda: iter(dataclasses.fields(extended)))
    for command in ("segment", "label", "shell"):
        parser = subparsers()[command]
        (action,) = [a for a in parser._actions if "--max-overlap" in a.option_strings]
        assert (action.dest, action.default, action.help) == ("max_overlap", 0.25, "a new knob")
        assert "--max-overlap" in parser.format_help()
    assert "--max-overlap" not in subparsers()["app"].format_help()  # not its group


def test_a_knob_of_an_unknown_type_is_refused_when_the_parser_is_built(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    odd = dataclasses.make_dataclass(
        "Odd",
        [("weights", "dict[str, float]", dataclasses.field(default=None, metadata={
            "help": "?", "cli": "--weights", "per_image": False, "group": "detection",
            "choices": None, "metavar": None}))],
        bases=(QueryOptions,),
        frozen=True,
    )  # fmt: skip
    monkeypatch.setattr(cli_options, "query_fields", lambda: iter(dataclasses.fields(odd)))
    with pytest.raises(TypeError, match="no command-line flag kind"):
        build_parser()
    with pytest.raises(ValueError, match="Unknown query option group"):
        cli_options.add_query_options(argparse.ArgumentParser(), ("bogus",))
