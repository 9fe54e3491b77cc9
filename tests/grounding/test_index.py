"""ImageIndex files: provenance (which models built it) and validation of every field read."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from grounded_sam import GroundedSAM
from grounded_sam.grounding.index import ImageIndex, weights_fingerprint
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
    old = copy.copy(index)
    old.weights_fingerprint = ""  # as in a version-1 file
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
