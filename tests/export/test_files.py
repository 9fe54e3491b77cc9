"""Unique output names for many images: one function for ``segment --out`` and datasets."""

from __future__ import annotations

from pathlib import Path

import pytest

from grounded_sam.cli.common import unique_stems
from grounded_sam.export.files import flat_names, flat_stems


@pytest.mark.parametrize(
    ("paths", "expected"),
    [
        # Regression: unique_stems gave x, x_1, x_1 (two result sets for three images); then
        # x, x_1, x_1_1 (x_1.jpg's results under another name than its own; issue 23).
        (["a/x.jpg", "b/x.png", "x_1.jpg"], ["x", "x_2", "x_1"]),
        (["a.jpg", "a.png", "a_1.jpg"], ["a", "a_2", "a_1"]),
        (["a_1.jpg", "a.jpg", "a.png", "a_2.png", "a.bmp"], ["a_1", "a", "a_3", "a_2", "a_4"]),
        (["a/x.jpg", "b/x.png", "y.jpg", "c/x.bmp"], ["x", "x_1", "y", "x_2"]),
        (["X.jpg", "x.png"], ["X", "x_1"]),  # one file on a case-insensitive filesystem
    ],
)
def test_segment_stems_are_unique(paths: list[str], expected: list[str]) -> None:
    stems = unique_stems([Path(p) for p in paths])
    assert stems == expected
    assert len({s.lower() for s in stems}) == len(paths)
    assert stems == flat_stems([Path(p).name for p in paths])  # the datasets' rule


def test_flat_names_keep_the_extension_and_flatten_folders() -> None:
    rels = ["a/x.jpg", "b/x.png", "x_1.jpg", "x.JPG"]
    assert flat_names(rels) == ["a__x.jpg", "b__x.png", "x_1.jpg", "x.JPG"]
    assert flat_stems(rels) == ["a__x", "b__x", "x_1", "x"]


def test_flat_names_are_unambiguous() -> None:
    rels = sorted(["sub/a.jpg", "sub__a.jpg", "a\nb.jpg", "x/b__c.jpg", "x__b/c.jpg", "A.png"])
    rels += ["\udcff.jpg", "a.jpg"]
    names = flat_names(rels)
    by_rel = dict(zip(rels, names, strict=True))
    assert by_rel["sub__a.jpg"] == "sub__a.jpg"  # a top-level file keeps its name...
    assert by_rel["sub/a.jpg"] == "sub__a_1.jpg"  # ...whatever sorts before it
    assert by_rel["A.png"] == "A.png" and by_rel["a.jpg"] == "a_1.jpg"  # stems unique (YOLO)
    assert by_rel["a\nb.jpg"] == "a_b.jpg" and by_rel["\udcff.jpg"] == "_.jpg"
    assert by_rel["x/b__c.jpg"] != by_rel["x__b/c.jpg"]
    stems = [Path(n).stem.lower() for n in names]
    assert len(set(stems)) == len(stems)
    assert all(n.isprintable() and n.encode("utf-8") for n in names)
