"""Unit tests of the page logic (grounded_sam.app.callbacks) with tiny random models."""

from __future__ import annotations

import copy
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from grounded_sam.app import callbacks as cb
from grounded_sam.results import make_detections
from tests.app.conftest import other_size, write_image

# -- uploads -------------------------------------------------------------------------------------


def test_open_upload_reads_image_and_keeps_only_the_name(photo: Path) -> None:
    image, name = cb.open_upload(str(photo))
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert name == photo.name


@pytest.mark.parametrize("path", [None, ""])
def test_open_upload_no_image(path) -> None:
    with pytest.raises(cb.UserError, match="No image yet"):
        cb.open_upload(path)


def test_open_upload_unreadable_file(tmp_path: Path) -> None:
    bad = tmp_path / "holiday.jpg"
    bad.write_bytes(b"this is not a picture at all")
    with pytest.raises(cb.UserError, match="Could not read 'holiday.jpg' as an image") as err:
        cb.open_upload(bad)
    assert str(tmp_path) not in str(err.value)  # no server paths in messages


def test_open_upload_truncated_file(tmp_path: Path, photo: Path) -> None:
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(photo.read_bytes()[:2000])
    with pytest.raises(cb.UserError, match="Could not read 'cut.jpg'") as err:
        cb.open_upload(cut)
    assert str(tmp_path) not in str(err.value)


def test_open_upload_too_large(tmp_path: Path) -> None:
    big = write_image(tmp_path / "big.png", (60, 20))
    with pytest.raises(cb.UserError, match=r"60×20 px; the limit is 50 px on the longer side"):
        cb.open_upload(big, max_side=50)
    image, _ = cb.open_upload(big, max_side=60)
    assert image.shape == (20, 60, 3)


def test_documented_limits() -> None:
    assert cb.MAX_IMAGE_SIDE == 4096
    assert cb.MAX_UPLOAD_SIZE == "20mb" and cb.MAX_UPLOAD_BYTES == 20 * 1024 * 1024


# -- index once, query many ----------------------------------------------------------------------


def test_image_is_indexed_once_and_phrases_reuse_the_index(
    tiny_gs, photo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    real_index = tiny_gs.index
    monkeypatch.setattr(tiny_gs, "index", lambda image, **kw: calls.append(1) or real_index(image))
    encodes = []
    real_encode = tiny_gs.predictor.encode
    monkeypatch.setattr(
        tiny_gs.predictor, "encode", lambda image: encodes.append(1) or real_encode(image)
    )
    session = cb.Session()
    info = cb.set_image(session, tiny_gs, photo)
    assert "Indexes built in this session: 1" in info and photo.name in info
    assert len(calls) == 1 and len(encodes) == 1
    index = session.index

    first = cb.text_query(session, tiny_gs, "dog", 0.0, "medium", 20)
    second = cb.text_query(session, tiny_gs, "person, kite", 0.0, "high", 5)
    assert "from the cached index" in first and "from the cached index" in second
    assert session.index is index and len(calls) == 1 and len(encodes) == 1
    assert session.result.phrases == ["person", "kite"]
    assert cb.index_markdown(session).endswith("Indexes built in this session: 1.")

    # The same picture again (another upload of the same file) reuses the index.
    again = cb.set_image(session, tiny_gs, photo)
    assert "index reused" in again and len(calls) == 1 and session.index_builds == 1
    # A different picture is indexed.
    other = write_image(tmp_path / "other.png", (64, 48))
    cb.set_image(session, tiny_gs, other)
    assert len(calls) == 2 and session.index_builds == 2 and session.result is None


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


# -- drawing, inspecting -------------------------------------------------------------------------


def _synthetic_result(session: cb.Session) -> None:
    """Two known regions: a big square and a small square inside it."""
    h, w = 40, 60
    image = np.full((h, w, 3), 90, dtype=np.uint8)
    masks = np.zeros((2, h, w), dtype=bool)
    masks[0, 5:35, 5:45] = True
    masks[1, 10:20, 10:20] = True
    dets = make_detections(
        masks=masks,
        xyxy=np.array([[5, 5, 45, 35], [10, 10, 20, 20]], dtype=np.float32),
        confidence=np.array([0.9, 0.6], dtype=np.float32),
        class_id=np.array([0, 1]),
        phrases=["table", "cup"],
        clip_score=np.array([0.31, 0.27], dtype=np.float32),
        sam_iou=np.array([0.95, 0.88], dtype=np.float32),
    )
    session.image = image
    session.result = cb.Result(image, dets, "text", "table, cup", ["table", "cup"], 0.01)


def test_describe_region_under_a_click() -> None:
    session = cb.Session()
    assert "type a phrase first" in cb.describe_region(session, 1, 1)
    _synthetic_result(session)
    small = cb.describe_region(session, 12, 15)
    assert "**cup**" in small and "confidence 0.600" in small and "CLIP score 0.270" in small
    assert "SAM IoU 0.880" in small and "2 regions overlap here" in small
    big = cb.describe_region(session, 40, 30)
    assert "**table**" in big and "confidence 0.900" in big and "overlap" not in big
    assert cb.describe_region(session, 55, 2) == "No region at (55, 2)."
    assert "**table**" in cb.describe_row(session, 0)
    assert cb.describe_row(session, 5) == "No such region."


def test_inspect_click_mode(tiny_gs) -> None:
    session = cb.Session()
    _synthetic_result(session)
    # inspecting needs no engine work: no index (none is built for it)
    message, changed = cb.click(session, tiny_gs, 12, 15, "Inspect region")
    assert not changed and "**cup**" in message
    assert session.index is None and len(session.store) == 0


def test_render_and_opacity() -> None:
    session = cb.Session()
    assert cb.render(session) is None
    _synthetic_result(session)
    none = cb.render(session, 0.0)
    full = cb.render(session, 1.0)
    half = cb.render(session, 0.5)
    assert none.shape == full.shape == half.shape == (40, 60, 3)
    inside = (slice(25, 30), slice(30, 40))  # in the big mask, away from boxes and labels
    assert np.array_equal(none[inside], session.image[inside])
    assert not np.array_equal(full[inside], none[inside])
    between = np.abs(half[inside].astype(int) - none[inside]).mean()
    assert 0 < between < np.abs(full[inside].astype(int) - none[inside]).mean()
    # Re-rendering never touches the engine or the result.
    assert session.result.dets.mask.shape == (2, 40, 60)


def test_models_line(tiny_gs) -> None:
    line = cb.models_markdown(tiny_gs)
    assert "SAM" in line and "CLIP" in line and "cpu" in line and "float32" in line


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


# -- exports -------------------------------------------------------------------------------------


def test_exports(indexed: cb.Session, tiny_gs) -> None:
    assert cb.export_files(indexed, tiny_gs) is None  # nothing to export yet
    cb.text_query(indexed, tiny_gs, "dog, person", 0.0, "medium", 20)
    dets = indexed.result.dets
    h, w = indexed.image.shape[:2]
    files = cb.export_files(indexed, tiny_gs, 0.4)
    stem = Path(indexed.name).stem
    assert files.json.name == f"{stem}.json"
    assert files.masks_zip.name == f"{stem}_masks.zip"
    assert files.overlay_png.name == f"{stem}_overlay.png"
    assert files.json.parent == indexed.workdir

    doc = json.loads(files.json.read_text())
    assert doc["width"] == w and doc["height"] == h and doc["image"] == indexed.name
    assert doc["prompt"] == "dog, person" and doc["phrases"] == ["dog", "person"]
    assert doc["models"] == {"sam": tiny_gs.model_ids[0], "clip": tiny_gs.model_ids[1]}
    assert doc["num_instances"] == len(dets) == len(doc["instances"])
    rec = doc["instances"][0]
    assert {"label", "confidence", "clip_score", "sam_iou", "box", "area", "mask"} <= set(rec)

    with zipfile.ZipFile(files.masks_zip) as zf:
        names = zf.namelist()
        assert len(names) == len(dets) and all(n.endswith(".png") for n in names)
        with zf.open(names[0]) as fh:
            mask = np.asarray(Image.open(fh))
    assert mask.shape == (h, w) and set(np.unique(mask)) <= {0, 255}
    assert np.array_equal(mask == 255, dets.mask[0])

    overlay = np.asarray(Image.open(files.overlay_png).convert("RGB"))
    assert np.array_equal(overlay, cb.render(indexed, 0.4))

    # Same result and settings: the files are reused; a new opacity rewrites the overlay.
    assert cb.export_files(indexed, tiny_gs, 0.4) == files
    cb.export_files(indexed, tiny_gs, 0.9)
    assert not np.array_equal(np.asarray(Image.open(files.overlay_png).convert("RGB")), overlay)


def test_exports_of_an_empty_result_and_of_a_prompt(indexed: cb.Session, tiny_gs) -> None:
    cb.text_query(indexed, tiny_gs, "zebra", 1.0)
    files = cb.export_files(indexed, tiny_gs)
    assert json.loads(files.json.read_text())["num_instances"] == 0
    assert zipfile.ZipFile(files.masks_zip).namelist() == []
    cb.click(indexed, tiny_gs, 20, 20, "Foreground point")
    doc = json.loads(cb.export_files(indexed, tiny_gs).json.read_text())
    assert doc["phrases"] == ["prompt"] and doc["prompt"] is None
    assert doc["instances"][0]["clip_score"] is None


def test_session_close_removes_its_files(indexed: cb.Session, tiny_gs) -> None:
    cb.text_query(indexed, tiny_gs, "dog", 0.0)
    files = cb.export_files(indexed, tiny_gs)
    folder = files.json.parent
    assert folder.is_dir()
    indexed.close()
    assert not folder.exists() and indexed.workdir is None


# -- sessions ------------------------------------------------------------------------------------


def test_two_sessions_do_not_mix(tiny_gs, examples: list[Path]) -> None:
    template = cb.Session()  # what gr.State holds; each tab gets a deep copy
    a, b = copy.deepcopy(template), copy.deepcopy(template)
    assert a is not b and a.points is not b.points and a.lock is not b.lock
    first, second = examples[0], other_size(examples, examples[0])
    cb.set_image(a, tiny_gs, first)
    cb.set_image(b, tiny_gs, second)
    assert a.index is not b.index and a.image.shape != b.image.shape
    cb.text_query(a, tiny_gs, "date", 0.0)
    cb.text_query(b, tiny_gs, "fig, hazelnut", 0.0)
    cb.click(b, tiny_gs, 10, 10, "Foreground point")
    assert a.result.phrases == ["date"] and a.result.kind == "text" and a.points == []
    assert a.result.image is a.image and b.result.image is b.image
    assert a.result.dets.mask.shape[1:] == a.image.shape[:2]
    assert b.result.dets.mask.shape[1:] == b.image.shape[:2]
    assert a.index_builds == b.index_builds == 1
    fa, fb = cb.export_files(a, tiny_gs), cb.export_files(b, tiny_gs)
    assert fa.json.parent != fb.json.parent
    assert json.loads(fa.json.read_text())["image"] == first.name
    assert json.loads(fb.json.read_text())["image"] == second.name
    assert template.index is None and template.workdir is None
    a.close()
    b.close()
    assert fb.json.parent.exists() is False


def test_deepcopy_of_a_used_session_is_independent(indexed: cb.Session, tiny_gs) -> None:
    cb.click(indexed, tiny_gs, 5, 5, "Foreground point")
    cb.export_files(indexed, tiny_gs)
    twin = copy.deepcopy(indexed)
    assert twin.points == indexed.points and twin.points is not indexed.points
    assert twin.workdir is None and twin.exported is None and twin.lock is not indexed.lock


# -- bundled examples ----------------------------------------------------------------------------


def test_bundled_examples(examples: list[Path]) -> None:
    folder = examples[0].parent
    readme = (folder / "README.txt").read_text()
    assert "MIT" in readme and "labelme2coco" in readme
    for path in examples:
        assert path.stat().st_size <= 100 * 1024, path.name
        assert path.name in readme
        image, _ = cb.open_upload(path)
        assert max(image.shape[:2]) <= 800


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


# -- one index store for every tab ---------------------------------------------------------------


def test_tabs_share_one_store_and_one_picture_is_indexed_once(
    tiny_gs, photo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from copy import deepcopy

    from grounded_sam.grounding.store import IndexStore

    calls = []
    real_index = tiny_gs.index
    monkeypatch.setattr(tiny_gs, "index", lambda image, **kw: calls.append(1) or real_index(image))
    store = IndexStore(10**9)
    template = cb.Session(store=store)
    first, second = deepcopy(template), deepcopy(template)  # what gr.State does per tab
    assert first.store is second.store is store and first.lock is not second.lock
    try:
        cb.set_image(first, tiny_gs, photo)
        info = cb.set_image(second, tiny_gs, photo)
        assert len(calls) == 1 and "indexed before, index reused" in info
        assert first.index is second.index and len(store) == 1
        assert (first.index_builds, second.index_builds) == (1, 0)
        # evicted (another tab's images pushed it out): built again when next needed
        store.clear()
        assert first.index is None and "dropped from memory" in cb.index_markdown(first)
        status = cb.text_query(first, tiny_gs, "dog", 0.0, "low", 5)
        assert "from the cached index" in status and len(calls) == 2 and first.index_builds == 2
        assert second.index is first.index  # the rebuilt index is shared again
    finally:
        first.close()
        second.close()


def test_an_index_over_the_stores_bound_is_a_user_error(tiny_gs, photo: Path) -> None:
    from grounded_sam.grounding.store import IndexStore

    session = cb.Session(store=IndexStore(1000))
    with pytest.raises(cb.UserError, match="more than the index store's bound"):
        cb.set_image(session, tiny_gs, photo)
    assert session.index is None


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
