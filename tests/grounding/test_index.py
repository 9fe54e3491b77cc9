"""ImageIndex files: provenance (which models built it) and validation of every field read."""

from __future__ import annotations

import copy
import dataclasses
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from grounded_sam import GroundedSAM
from grounded_sam.grounding.index import BoxDecodeCache, ImageIndex, weights_fingerprint
from grounded_sam.sam.predictor import SamPredictor


@pytest.fixture(scope="module")
def saved(tiny_gs, tmp_path_factory) -> tuple[ImageIndex, Path]:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    image[10:30, 10:40] = (250, 200, 20)
    index = tiny_gs.index(image)
    assert len(index) > 0, "the tiny engine must propose regions for these tests to mean much"
    path = index.save(tmp_path_factory.mktemp("index") / "a.gsindex")
    return index, path


def test_provenance_is_recorded_and_round_trips(tiny_gs, saved) -> None:
    index, path = saved
    assert index.model_ids == tiny_gs.model_ids and all(index.model_ids)
    assert len(index.weights_fingerprint) == 64
    loaded = ImageIndex.load(path)
    assert loaded.model_ids == index.model_ids
    assert loaded.weights_fingerprint == index.weights_fingerprint
    assert loaded.settings == index.settings
    a = tiny_gs.query(index, "square", threshold=0.0)
    b = tiny_gs.query(loaded, "square", threshold=0.0)
    assert len(a) > 0 and np.array_equal(a.mask, b.mask)


def test_fingerprint_sees_weights_not_dtype(tiny_gs) -> None:
    sam = tiny_gs.predictor.model
    assert weights_fingerprint(sam) == weights_fingerprint(copy.deepcopy(sam).half())
    other = copy.deepcopy(sam)
    with torch.no_grad():
        next(other.parameters()).add_(0.01)
    assert weights_fingerprint(other) != weights_fingerprint(sam)
    assert weights_fingerprint(None, "not a model") == ""


def test_query_with_other_weights_refuses(tiny_gs, saved) -> None:
    index, path = saved
    other = copy.deepcopy(tiny_gs.predictor.model)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.01)
    gs = GroundedSAM(SamPredictor(other), tiny_gs.scorer, model_ids=tiny_gs.model_ids)
    with pytest.raises(ValueError, match="other model weights.*Index the image again"):
        gs.query(ImageIndex.load(path), "square")


def test_query_with_other_model_ids_refuses_when_no_fingerprint(tiny_gs, saved) -> None:
    index, _ = saved
    old = dataclasses.replace(index, weights_fingerprint="")  # as in a version-1 file
    gs = GroundedSAM(tiny_gs.predictor, tiny_gs.scorer, model_ids=("facebook/sam-vit-huge", "x"))
    with pytest.raises(ValueError, match="built with SAM .* but this engine uses SAM facebook"):
        gs.query(old, "square")


def _nan_logits(b: dict) -> None:
    b["proposals"]["low_res_logits"][0, 0, 0] = float("nan")


CRAFTED = {
    "missing field": (lambda b: b["proposals"].pop("boxes"), "'proposals.boxes' is missing"),
    "list for a tensor": (lambda b: b.update(image=[1, 2]), "'image' must be a tensor"),
    "float image": (lambda b: b.update(image=b["image"].float()), "'image' must be a uint8"),
    "3-d embeddings": (
        lambda b: b.update(embeddings=b["embeddings"][0]),
        "'embeddings' must have 4 dimensions",
    ),
    "row count": (
        lambda b: b.update(region_embeddings=torch.cat([b["region_embeddings"]] * 2)),
        "has .* for size N but another field has",
    ),
    "huge original_size": (
        lambda b: b.update(original_size=[100_000, 100_000]),
        "'original_size' must be two integers in \\[1, 20000\\]",
    ),
    "original_size vs image": (
        lambda b: b.update(original_size=[1000, 1000]),
        "'original_size' is \\(1000, 1000\\) but the stored image is",
    ),
    "bool size": (lambda b: b.update(input_size=[True, 5]), "'input_size' must be two integers"),
    "unknown setting": (lambda b: b["settings"].update(evil=1), "unknown settings \\['evil'\\]"),
    "bad setting": (
        lambda b: b["settings"].update(crop_n_layers=99),
        "'settings' is invalid: crop_n_layers must be <= 3",
    ),
    "model ids": (lambda b: b.update(model_ids=[1, 2]), "'model_ids' must be two strings"),
    "nan logits": (_nan_logits, "'proposals.low_res_logits' holds NaN"),
    "crop index": (
        lambda b: b["proposals"]["crop_index"].fill_(7),
        "'proposals.crop_index' refers to crops",
    ),
    "crop sizes": (
        lambda b: b["proposals"].update(crop_input_sizes="xx"),
        "'proposals.crop_input_sizes' must list",
    ),
    "low_res_size": (
        lambda b: b["proposals"].update(low_res_size=3),
        "'proposals.low_res_size' does not match",
    ),
    "fingerprint": (
        lambda b: b.update(weights_fingerprint=["x"]),
        "'weights_fingerprint' must be a short string",
    ),
    "upscale": (
        lambda b: b["proposals"].update(upscale="nearest"),
        "'proposals.upscale' must be one of",
    ),
}


@pytest.mark.parametrize("case", list(CRAFTED))
def test_crafted_files_are_value_errors_naming_the_field(saved, tmp_path, case) -> None:
    _, path = saved
    blob = torch.load(path, weights_only=True)
    edit, match = CRAFTED[case]
    edit(blob)
    bad = tmp_path / "bad.gsindex"
    torch.save(blob, bad)
    with pytest.raises(ValueError, match=f"bad.gsindex is not a valid index file: .*{match}"):
        ImageIndex.load(bad)


@pytest.mark.parametrize(
    "content", [{"version": 99}, [1, 2, 3], {"version": 2}, {"version": True}]
)
def test_not_an_index(tmp_path, content) -> None:
    bad = tmp_path / "x.gsindex"
    torch.save(content, bad)
    with pytest.raises(ValueError, match="index file"):
        ImageIndex.load(bad)


def test_version_1_files_still_load(saved, tmp_path) -> None:
    _, path = saved
    blob = torch.load(path, weights_only=True)
    blob["version"] = 1
    del blob["weights_fingerprint"]
    old = tmp_path / "v1.gsindex"
    torch.save(blob, old)
    assert ImageIndex.load(old).weights_fingerprint == ""


def test_files_without_a_saved_mask_frame_still_load(saved, tmp_path) -> None:
    """Files written before the proposals' frame was saved (only ``target_length``, the old
    private ``Proposals._target_length``) load with SAM's pad-and-crop upscaling, which is
    what they were written with."""
    from grounded_sam.sam.proposals import MaskFrame

    index, path = saved
    assert ImageIndex.load(path).proposals.frame == index.proposals.frame
    blob = torch.load(path, weights_only=True)
    old_layout = {k: v for k, v in blob["proposals"].items() if k != "upscale"}
    assert "target_length" in old_layout and "low_res_size" in old_layout
    blob["proposals"] = old_layout
    old = tmp_path / "old.gsindex"
    torch.save(blob, old)
    loaded = ImageIndex.load(old)
    side = index.proposals.low_res_size
    assert loaded.proposals.frame == MaskFrame(blob["proposals"]["target_length"], side)
    assert loaded.proposals.frame.upscale == "pad_crop"
    assert torch.equal(loaded.proposals.full_masks(), index.proposals.full_masks())


# -- sharing: a frozen index, its box-decode cache under threads ------------------------------


def test_a_built_index_refuses_attribute_assignment(saved) -> None:
    index, _ = saved
    with pytest.raises(dataclasses.FrozenInstanceError):
        index.weights_fingerprint = ""  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        index.box_cache = BoxDecodeCache()  # type: ignore[misc]
    snapshot = index.box_decodes
    snapshot.clear()  # a copy: the index keeps its decodes
    assert index.box_decodes


def test_save_load_round_trip_keeps_every_field(tiny_gs, saved, tmp_path) -> None:
    index, path = saved
    back = ImageIndex.load(path, predictor=tiny_gs.predictor)  # the context is rebuilt
    assert back.embedding.context is not None
    np.testing.assert_array_equal(back.image, index.image)
    for name in ("region_embeddings", "frame_masks"):
        torch.testing.assert_close(getattr(back, name), getattr(index, name))
    torch.testing.assert_close(back.embedding.embeddings, index.embedding.embeddings)
    assert sorted(back.box_decodes) == sorted(index.box_decodes) != []
    for level, d in index.box_decodes.items():
        torch.testing.assert_close(back.box_decodes[level].low_res_logits, d.low_res_logits)
        assert torch.equal(back.box_decodes[level].done, d.done)
    assert back.nbytes == index.nbytes
    again = ImageIndex.load(back.save(tmp_path / "b.gsindex"))  # and once more, unprepared
    assert again.embedding.context is None
    assert again.nbytes == index.nbytes - index.embedding.context.nbytes
    assert again.nbytes > 0 and sorted(again.box_decodes) == sorted(index.box_decodes)


def test_nbytes_counts_features_and_decoder_context(tiny_gs, saved) -> None:
    index, _ = saved
    emb = index.embedding
    assert emb.context is not None and emb.context.nbytes > 0
    assert index.nbytes >= emb.nbytes == (
        emb.embeddings.nbytes + sum(f.nbytes for f in emb.features) + emb.context.nbytes
    )


def test_nbytes_counts_the_cache(make_engine) -> None:
    from .oracle import make_scene

    scene = make_scene()
    gs = make_engine(scene, prefetch_boxes=False)
    index = gs.index(scene.image)
    assert len(index) > 0 and index.box_cache.nbytes == 0
    before = index.nbytes
    gs.query(index, "red square", refine=0)
    side = index.proposals.low_res_size
    level = len(index) * (side * side * 4 + 4 + 1)  # logits, iou, done of every row
    assert index.box_cache.nbytes == level and index.nbytes == before + level


class _RacingDecoder:
    """Decodes boxes as rows of ``value``; every call waits until ``parties`` calls are in."""

    def __init__(self, parties: int, side: int = 4) -> None:
        self.barrier = threading.Barrier(parties, timeout=10)
        self.calls = 0
        self.side = side

    def __call__(self, boxes: torch.Tensor, value: float) -> tuple[torch.Tensor, torch.Tensor]:
        self.calls += 1
        self.barrier.wait()  # both threads have missed the same rows: a real race
        m = boxes.shape[0]
        return torch.full((m, self.side, self.side), value), torch.full((m,), value)


def test_racing_threads_get_the_first_write_and_done_rows_never_change() -> None:
    cache, boxes = BoxDecodeCache(), torch.zeros(6, 4)
    decoder = _RacingDecoder(parties=2)
    regions = torch.tensor([1, 3, 3])
    with ThreadPoolExecutor(2) as pool:
        got = list(pool.map(
            lambda v: cache.rows(0, regions, boxes, 4, lambda b: decoder(b, v)), (1.0, 2.0)
        ))  # fmt: skip
    assert decoder.calls == 2  # both missed; only one write is kept
    (la, ia), (lb, ib) = got
    assert torch.equal(la, lb) and torch.equal(ia, ib)
    assert la.shape == (3, 4, 4) and float(la[0, 0, 0]) in (1.0, 2.0)
    first = float(ia[0])
    # a later caller with another decoder sees the kept rows and decodes only new ones
    logits, iou = cache.rows(0, torch.tensor([3, 5]), boxes, 4, lambda b: (
        torch.full((b.shape[0], 4, 4), 9.0), torch.full((b.shape[0],), 9.0)
    ))  # fmt: skip
    assert iou.tolist() == [first, 9.0]
    snap = cache.snapshot()[0]
    assert snap.done.tolist() == [False, True, False, True, False, True]
    assert cache.nbytes == snap.nbytes == 6 * (16 * 4 + 4 + 1)


def test_concurrent_queries_on_one_index_give_the_serial_answer(make_engine) -> None:
    from .oracle import make_scene

    scene = make_scene()
    gs = make_engine(scene, prefetch_boxes=False)
    prompts = ["red square", "green circle", "red square, blue triangle"] * 4
    knobs = [{"refine": r} for r in (0, 1, 2)] * 4
    serial_index = gs.index(scene.image)
    serial = [gs.query(serial_index, p, **k) for p, k in zip(prompts, knobs, strict=True)]
    shared = gs.index(scene.image)
    assert shared.box_cache.nbytes == 0  # every query below fills the cache lazily
    with ThreadPoolExecutor(6) as pool:
        jobs = zip(prompts, knobs, strict=True)
        got = list(pool.map(lambda pk: gs.query(shared, pk[0], **pk[1]), jobs))
    for a, b in zip(serial, got, strict=True):
        assert len(a) == len(b) > 0
        np.testing.assert_array_equal(a.mask, b.mask)
        np.testing.assert_array_equal(a.class_id, b.class_id)
        np.testing.assert_allclose(a.confidence, b.confidence)
    for level, d in serial_index.box_decodes.items():
        mine = shared.box_decodes[level]
        assert torch.equal(mine.done, d.done)
        torch.testing.assert_close(mine.low_res_logits[d.done], d.low_res_logits[d.done])
