"""Text queries, Find similar and SAM point/box prompts answered from the index."""

from __future__ import annotations

import pytest

from grounded_sam.app import callbacks as cb
from tests.app.conftest import synthetic_result

# -- text prompts ----------------------------------------------------------------------------


def test_text_query_result_and_table(indexed: cb.Session, tiny_gs) -> None:
    status = cb.text_query(indexed, tiny_gs, "dog, frisbee", 0.0, "low", 20)
    dets = indexed.result.dets
    assert len(dets) >= 1, "tiny models at threshold 0 return the proposals"
    assert status.startswith(f"Found {len(dets)} region")
    rows = cb.region_table(indexed)
    assert len(rows) == len(dets)
    for i, row in enumerate(rows):
        assert len(row) == len(cb.TABLE_HEADERS)
        assert row[0] == i and row[1] in ("dog", "frisbee")
        assert row[2] == pytest.approx(float(dets.confidence[i]), abs=1e-3)
        assert row[3] == pytest.approx(float(dets.data["clip_score"][i]), abs=1e-3)
        assert row[4] == pytest.approx(float(dets.data["sam_iou"][i]), abs=1e-3)
        assert row[5] == ", ".join(str(round(float(v))) for v in dets.xyxy[i])
        assert row[6] == int(dets.mask[i].sum())


def test_nothing_found_is_a_message_not_an_error(indexed: cb.Session, tiny_gs) -> None:
    status = cb.text_query(indexed, tiny_gs, "zebra", 1.0, "medium", 20)
    assert status.startswith("No region matched 'zebra' at threshold 1.00")
    assert len(indexed.result.dets) == 0 and cb.region_table(indexed) == []
    assert cb.render(indexed, 0.5).shape == indexed.image.shape


@pytest.mark.parametrize("prompt", ["", "   ", " , ,", None])
def test_empty_phrase(indexed: cb.Session, tiny_gs, prompt) -> None:
    with pytest.raises(cb.UserError, match="Type at least one phrase"):
        cb.text_query(indexed, tiny_gs, prompt, 0.3)


def test_query_without_image(tiny_gs) -> None:
    with pytest.raises(cb.UserError, match="No image yet"):
        cb.text_query(cb.Session(), tiny_gs, "dog", 0.3)
    with pytest.raises(cb.UserError, match="No image yet"):
        cb.click(cb.Session(), tiny_gs, 1, 1, "Foreground point")


@pytest.mark.parametrize("threshold", [-0.1, 1.5, "x"])
def test_bad_threshold(indexed: cb.Session, tiny_gs, threshold) -> None:
    with pytest.raises(cb.UserError, match="threshold"):
        cb.text_query(indexed, tiny_gs, "dog", threshold)


@pytest.mark.parametrize(
    ("level", "refine", "area"), [("low", 0, 0), ("medium", 1, 5), ("high", 2, 20), ("HIGH", 2, 20)]
)
def test_refinement_levels(level: str, refine: int, area: int) -> None:
    assert cb.refinement_params(level, (100, 100)) == (refine, area)


def test_unknown_refinement_level() -> None:
    with pytest.raises(cb.UserError, match="Unknown refinement level"):
        cb.refinement_params("ultra", (10, 10))


def test_settings_reach_the_engine(
    indexed: cb.Session, tiny_gs, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = {}
    real_query = tiny_gs.query

    def spy(index, prompt, **kwargs):
        seen.update(kwargs, prompt=prompt)
        return real_query(index, prompt, **kwargs)

    monkeypatch.setattr(tiny_gs, "query", spy)
    h, w = indexed.image.shape[:2]
    cb.text_query(indexed, tiny_gs, "a, b", 0.25, "high", 3)
    assert seen["prompt"] == ["a", "b"]
    assert seen["threshold"] == 0.25 and seen["top_k"] == 3 and seen["refine"] == 2
    assert seen["min_region_area"] == round(0.002 * h * w)
    cb.text_query(indexed, tiny_gs, "a", 0.5, "low", 0)
    assert seen["top_k"] is None and seen["refine"] == 0 and seen["min_region_area"] == 0


def test_top_k_limits_regions_per_phrase(indexed: cb.Session, tiny_gs) -> None:
    cb.text_query(indexed, tiny_gs, "thing", 0.0, "low", 1)
    assert len(indexed.result.dets) <= 1


def test_inspect_click_mode(tiny_gs) -> None:
    session = cb.Session()
    synthetic_result(session)
    # inspecting needs no engine work: no index (none is built for it)
    message, changed = cb.click(session, tiny_gs, 12, 15, "Inspect region")
    assert not changed and "**cup**" in message
    assert session.index is None and len(session.store) == 0


# -- point and box prompts -----------------------------------------------------------------------


def test_point_and_box_prompts_use_the_cached_embedding(
    indexed: cb.Session, tiny_gs, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_encode(*args, **kwargs):
        raise AssertionError("the image encoder ran again")

    monkeypatch.setattr(tiny_gs.predictor, "encode", no_encode)
    monkeypatch.setattr(tiny_gs, "index", no_encode)
    h, w = indexed.image.shape[:2]
    message, changed = cb.click(indexed, tiny_gs, w / 2, h / 2, "Foreground point")
    assert changed and message.startswith("SAM mask from 1 foreground point")
    result = indexed.result
    assert result.kind == "prompt" and len(result.dets) == 1
    assert result.dets.mask.shape == (1, h, w)
    assert indexed.prompt_logits is not None

    message, _ = cb.click(indexed, tiny_gs, 5, 5, "Background point")
    assert "1 foreground point + 1 background point" in message
    assert [p[2] for p in indexed.points] == [1, 0]

    message, changed = cb.click(indexed, tiny_gs, 10, 10, "Box corners")
    assert changed and "click the opposite corner" in message and indexed.box_start is not None
    assert indexed.result is result or indexed.result.kind == "prompt"
    message, _ = cb.click(indexed, tiny_gs, w - 10, h - 10, "Box corners")
    assert "a box" in message and indexed.box == (10.0, 10.0, w - 9.0, h - 9.0)
    assert cb.region_table(indexed)[0][1] == "prompt"
    assert cb.region_table(indexed)[0][3] == ""  # no CLIP score for SAM prompts
    drawn = cb.render(indexed, 0.0)
    assert drawn.shape == indexed.image.shape

    assert cb.clear_prompts(indexed) == "Point and box prompts cleared."
    assert indexed.points == [] and indexed.box is None and indexed.result is None
    assert indexed.index_builds == 1


def test_box_corners_too_close(indexed: cb.Session, tiny_gs) -> None:
    cb.click(indexed, tiny_gs, 30, 30, "Box corners")
    with pytest.raises(cb.UserError, match="too close together"):
        cb.click(indexed, tiny_gs, 31, 30, "Box corners")


def test_clicks_outside_are_clamped_and_modes_checked(indexed: cb.Session, tiny_gs) -> None:
    h, w = indexed.image.shape[:2]
    cb.click(indexed, tiny_gs, w + 50, -3, "Foreground point")
    assert indexed.points == [(w - 1.0, 0.0, 1)]
    with pytest.raises(cb.UserError, match="Unknown click mode"):
        cb.click(indexed, tiny_gs, 1, 1, "Lasso")


def test_text_query_clears_prompts(indexed: cb.Session, tiny_gs) -> None:
    cb.click(indexed, tiny_gs, 20, 20, "Foreground point")
    cb.text_query(indexed, tiny_gs, "dog", 0.0)
    assert indexed.points == [] and indexed.result.kind == "text"


def test_negative_phrases_reach_the_engine_and_bad_ones_are_user_errors(
    indexed: cb.Session, tiny_gs, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = {}
    real_query = tiny_gs.query

    def spy(index, prompt=None, **kwargs):
        seen.update(kwargs, prompt=prompt)
        return real_query(index, prompt, **kwargs)

    monkeypatch.setattr(tiny_gs, "query", spy)
    cb.text_query(indexed, tiny_gs, "cup", 0.0, "low", 0, negative="handle, saucer")
    assert seen["negative"] == ["handle", "saucer"]
    cb.text_query(indexed, tiny_gs, "cup", 0.0, "low", 0, negative=" ")
    assert seen["negative"] is None
    with pytest.raises(cb.UserError, match="both a phrase and a negative"):
        cb.text_query(indexed, tiny_gs, "cup", 0.0, "low", 0, negative="Cup")


def test_find_similar_mode_boxes_an_example_and_shows_look_alikes(
    indexed: cb.Session, tiny_gs
) -> None:
    assert "Find similar" in cb.CLICK_MODES
    h, w = indexed.image.shape[:2]
    message, changed = cb.click(indexed, tiny_gs, 5, 5, "Find similar")
    assert changed and "opposite corner" in message and indexed.box_start == (5, 5)
    message, changed = cb.click(indexed, tiny_gs, w // 2, h // 2, "Find similar", threshold=0.0)
    assert changed and "similar to box (5, 5," in message
    result = indexed.result
    assert result.kind == "text" and result.phrases == [cb.SIMILAR_LABEL]
    assert len(result.dets) > 0 and set(result.dets.data["class_name"]) == {cb.SIMILAR_LABEL}
    assert len(cb.region_table(indexed)) == len(result.dets)


@pytest.mark.parametrize(
    ("knobs", "message"),
    [
        ({"threshold": 1.5}, "threshold must be in"),
        ({"top_k": 2.5}, "top_k must be an integer"),
        ({"top_k": 10**6}, "top_k must be"),
        ({"negative": 5}, "negative must be phrases"),
    ],
)
def test_bad_knobs_fail_with_the_query_options_message(
    indexed: cb.Session, tiny_gs, knobs: dict, message: str
) -> None:
    from grounded_sam.grounding.options import QueryOptions

    args = {"threshold": 0.3, "top_k": 5, **knobs}
    with pytest.raises(ValueError, match=message) as api:  # the Python API's own message
        QueryOptions(**{**args, "top_k": args["top_k"]})
    with pytest.raises(cb.UserError) as page:
        cb.text_query(indexed, tiny_gs, "dog", args["threshold"], "low", args["top_k"],
                      negative=args.get("negative"))  # fmt: skip
    assert str(page.value) == str(api.value)
