"""Fixtures for the SAM tests: one tiny random SAM, loaded the way users load SAM.

The model is written by ``save_tiny_sam`` into a temp dir once for the package and loaded through
``grounded_sam.sam.loading.load_sam_model`` (the code users hit). Meta's reference predictor
gets the very same weights through ``tests/sam/reference.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from grounded_sam.inputs import load_image
from grounded_sam.sam.loading import load_sam_model
from grounded_sam.sam.predictor import SamPredictor
from grounded_sam.sam.tiny import save_tiny_sam, save_tiny_sam2, save_tiny_sam_hq
from grounded_sam.sam.types import ImageEmbedding

from .images import PHOTO_DIR, photo_path, random_image, shapes_image

CPU = torch.device("cpu")


@pytest.fixture(scope="package", autouse=True)
def _single_torch_thread():
    """Run this package's tiny models on one intra-op thread (restored afterwards).

    Tensors here are tiny, so threading buys nothing, and on a busy 2-core machine OpenMP
    threads waiting for each other made the suite ~10x slower in wall time.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="package")
def sam_model_dir(tmp_path_factory) -> Path:
    """A tiny random SAM (image_size 256, hidden 32) in save_pretrained layout."""
    return save_tiny_sam(tmp_path_factory.mktemp("tiny_sam"))


@pytest.fixture(scope="package")
def sam_model(sam_model_dir):
    """The tiny ``transformers.SamModel``, float32 on the CPU, via ``load_sam_model``."""
    return load_sam_model(sam_model_dir, CPU, torch.float32)


@pytest.fixture(scope="package")
def predictor(sam_model) -> SamPredictor:
    """Our predictor on the tiny model (shared: do not patch it; build your own instead)."""
    return SamPredictor(sam_model)


@pytest.fixture(scope="package")
def hq_dir(tmp_path_factory) -> Path:
    """A tiny random HQ-SAM in save_pretrained layout."""
    return save_tiny_sam_hq(tmp_path_factory.mktemp("tiny_hq"))


@pytest.fixture(scope="package")
def hq(hq_dir):
    """Our HQ-SAM predictor on the tiny model, loaded through the factory (shared)."""
    from grounded_sam.sam.factory import load_predictor
    from grounded_sam.sam.hq import SamHQPredictor

    predictor = load_predictor(hq_dir, CPU, torch.float32)
    assert isinstance(predictor, SamHQPredictor)
    return predictor


@pytest.fixture(scope="package")
def sam2_dir(tmp_path_factory) -> Path:
    """A tiny random SAM 2.1 in save_pretrained layout."""
    return save_tiny_sam2(tmp_path_factory.mktemp("tiny_sam2"))


@pytest.fixture(scope="package")
def sam2(sam2_dir):
    """Our SAM 2 predictor on the tiny model, loaded through the factory (shared)."""
    from grounded_sam.sam.factory import load_predictor
    from grounded_sam.sam.sam2 import Sam2Predictor

    predictor = load_predictor(sam2_dir, CPU, torch.float32)
    assert isinstance(predictor, Sam2Predictor)
    return predictor


@pytest.fixture(scope="package")
def meta_sam(sam_model):
    """Meta's ``Sam`` with the tiny architecture and our weights (decoder LayerNorm eps
    aligned to the transformers config: see ``reference.build_meta_sam``)."""
    pytest.importorskip("segment_anything")
    from .reference import meta_sam_from_hf

    return meta_sam_from_hf(sam_model)


@pytest.fixture(scope="package")
def meta_sam_stock(sam_model):
    """Meta's ``Sam`` as Meta ships it (decoder LayerNorm eps 1e-5), same weights."""
    pytest.importorskip("segment_anything")
    from .reference import meta_sam_from_hf

    return meta_sam_from_hf(sam_model, match_layer_norm_eps=False)


@pytest.fixture
def meta_predictor(meta_sam):
    """A fresh Meta ``SamPredictor`` (stateful: call ``set_image`` first)."""
    from segment_anything import SamPredictor as MetaSamPredictor

    return MetaSamPredictor(meta_sam)


IMAGE_IDS = ("random_120x200", "shapes_300x170", "photo")


def make_image(image_id: str) -> np.ndarray:
    """The test image named ``image_id``, (H, W, 3) uint8 RGB, non-square. The real photo is
    skipped cleanly when the shared data folder is absent (as in a user's clone)."""
    if image_id == "random_120x200":
        return random_image(120, 200)
    if image_id == "shapes_300x170":
        return shapes_image(300, 170)
    if image_id == "photo":
        path = photo_path()
        if path is None:
            pytest.skip(f"no real photo under {PHOTO_DIR}")
        return load_image(path)
    raise KeyError(image_id)


@dataclass
class Scene:
    """One test image encoded by both sides (each encoder runs once per image)."""

    image: np.ndarray
    embedding: ImageEmbedding  # ours
    meta: object  # Meta's SamPredictor with this image set (predict does not change it)


@pytest.fixture(scope="package")
def _scenes(predictor, meta_sam):
    from segment_anything import SamPredictor as MetaSamPredictor

    cache: dict[str, Scene] = {}

    def get(image_id: str) -> Scene:
        if image_id not in cache:
            image = make_image(image_id)
            meta = MetaSamPredictor(meta_sam)
            meta.set_image(image)
            cache[image_id] = Scene(image, predictor.encode(image), meta)
        return cache[image_id]

    return get


@pytest.fixture(params=IMAGE_IDS)
def scene(request, _scenes) -> Scene:
    """Each parity image in turn, encoded by our predictor and by Meta's."""
    return _scenes(request.param)
