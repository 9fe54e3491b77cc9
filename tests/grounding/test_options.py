"""QueryOptions: every knob validated once, on construction (table-driven)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from grounded_sam import limits
from grounded_sam.grounding.options import QueryOptions, query_fields

BAD = [
    ({"threshold": 1.5}, "threshold must be in [0, 1]"),
    ({"threshold": float("nan")}, "threshold must be a number, got NaN"),
    ({"threshold": True}, "threshold must be a number"),
    ({"top_k": 0}, "top_k must be in"),
    ({"top_k": "default"}, "top_k must be an integer"),
    ({"refine": limits.MAX_REFINE + 1}, "refine must be in"),
    ({"min_region_area": -1}, "min_region_area must be >= 0, got -1"),  # as query() said
    ({"min_region_area": 2**63}, "min_region_area must be in"),
    ({"negative": 5}, "negative must be phrases"),
    ({"calibration": "both"}, "calibration must be one of"),
    ({"keep_parts": "no"}, "keep_parts must be True or False"),
    ({"keep_parts": 1}, "keep_parts must be True or False"),
    ({"part_thresh": float("nan")}, "part_thresh must be a number, got NaN"),
    ({"part_thresh": -5}, "part_thresh must be in [0, 1]"),
    ({"part_thresh": "x"}, "part_thresh must be a number"),
    ({"exemplar_label": 3}, "exemplar_label must be a string"),
    ({"exemplar_label": "  "}, "exemplar_label is empty"),
    ({"exemplars": [[0, 0, 5]]}, "exemplars must have shape"),
    ({"exemplars": [[5, 5, 1, 1]]}, "x2 < x1"),
    ({"exemplars": [[5, 5, 5.5, 9]]}, "has no area"),
    ({"exemplars": [[0, 0, 5, 5]] * (limits.MAX_EXEMPLARS + 1)}, "the limit is"),
    ({"exemplars": "0,0,5,5"}, "got a string"),
    ({"points": [[float("nan"), 1]]}, "NaN or infinite"),
    ({"points": [[1, 1]] * (limits.MAX_POINTS_PER_CALL + 1)}, "the limit is"),
    ({"points": [[1, 1]], "point_labels": [2]}, "must be 1 (foreground) or 0"),
    ({"points": [[1, 1]], "point_labels": [1, 0]}, "one label per point"),
    ({"point_labels": [1]}, "without points"),
]


@pytest.mark.parametrize(("changes", "message"), BAD, ids=[str(c)[:40] for c, _ in BAD])
def test_bad_values_fail_with_the_knob_named(changes: dict, message: str) -> None:
    with pytest.raises(ValueError) as err:
        QueryOptions(**changes)
    assert message in str(err.value)
    with pytest.raises(ValueError):  # replace() validates too
        QueryOptions().replace(**changes)


def test_unknown_knob_is_a_type_error_listing_the_knobs() -> None:
    with pytest.raises(TypeError, match="threshold"):
        QueryOptions().replace(treshold=0.5)


def test_values_are_normalised_and_immutable() -> None:
    opts = QueryOptions(
        threshold=np.float32(0.5),
        top_k=np.int64(3),
        negative="handle,  saucer",
        keep_parts=np.bool_(True),
        exemplars=[1, 2, 30, 40],
        points=np.array([[3, 4]]),
    )
    assert opts.threshold == 0.5 and isinstance(opts.threshold, float)
    assert opts.top_k == 3 and type(opts.top_k) is int
    assert opts.negative == ("handle", "saucer")
    assert opts.keep_parts is True
    assert opts.exemplars == ((1.0, 2.0, 30.0, 40.0),)
    assert opts.points == ((3.0, 4.0),) and opts.point_labels == (1,)
    same = QueryOptions(**{f.name: getattr(opts, f.name) for f in query_fields()})
    assert same == opts and hash(same) == hash(opts)
    with pytest.raises(AttributeError):
        opts.threshold = 0.1  # type: ignore[misc]


def test_dict_round_trip_is_json_and_per_image_prompts_can_be_left_out() -> None:
    opts = QueryOptions(negative="cup", exemplars=[[0, 0, 9, 9]], points=[[1, 1]], top_k=None)
    data = json.loads(json.dumps(opts.to_dict()))
    assert QueryOptions.from_dict(data) == opts
    run = opts.to_dict(per_image=False)
    assert "exemplars" not in run and "points" not in run and run["negative"] == ["cup"]
    with pytest.raises(ValueError, match="Unknown query option"):
        QueryOptions.from_dict({"bogus": 1})


def test_image_dependent_checks() -> None:
    opts = QueryOptions(negative="dog", points=[[50, 5]], exemplars=[[0, 0, 60, 9]])
    with pytest.raises(ValueError, match="both a phrase and a negative"):
        opts.negatives_for(["Dog"])
    assert opts.negatives_for(["cat"]) == ["dog"]
    opts.check_for_image((10, 100))
    with pytest.raises(ValueError, match="outside the image"):
        opts.check_for_image((10, 40))


def test_every_field_has_help_and_a_default() -> None:
    for f in query_fields():
        assert f.metadata["help"], f.name
    assert QueryOptions() == QueryOptions.from_dict({})
