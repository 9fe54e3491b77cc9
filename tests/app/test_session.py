"""A tab's session: uploads, indexing once (through the shared store), tabs apart."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

from grounded_sam.app import callbacks as cb
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
