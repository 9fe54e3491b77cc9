"""from_pretrained finds a text-grounder family through the registry, never by its name.

A stand-in family (its own ``model_type``, back-end, grounder and engine builder) is added to
:data:`grounded_sam.sam.families.TEXT_GROUNDERS`: the pipeline builds its engine, indexes
through its grounder and refuses what the grounder says it cannot do, with no code naming it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch

from grounded_sam import GroundedSAM
from grounded_sam.grounding.grounder import Candidates, TextGrounder
from grounded_sam.sam import families
from grounded_sam.sam.types import ImageEmbedding

CALLS: list[dict] = []


@dataclass
class _ToyBackend:
    """Encodes an image to a constant embedding (no model)."""

    device: torch.device = torch.device("cpu")
    encoded: list = field(default_factory=list)

    def encode(self, image: np.ndarray) -> ImageEmbedding:
        self.encoded.append(image.shape)
        h, w = image.shape[:2]
        return ImageEmbedding(torch.zeros(1, 4, 2, 2), (h, w), (8, 8))


@dataclass(frozen=True)
class _ToyGrounder:
    backend: _ToyBackend

    def ground(self, index, phrases, options):
        return Candidates.none(phrases)

    def make_index(self, image, embedding, settings, model_ids, weights_fingerprint):
        return ("toy index", image.shape, embedding.original_size, model_ids)

    def refusal(self, operation: str) -> str | None:
        return "toy grounders take no clicks: use query()" if operation == "predict" else None


def toy_engine(sam, clip, device, dtype, compile=False, **kwargs):
    """The stand-in family's ``engine``: GroundedSAM's constructor arguments."""
    CALLS.append({"sam": sam, "clip": clip, "device": device, "dtype": dtype, **kwargs})
    backend = _ToyBackend()
    return {
        "predictor": backend,
        "scorer": None,
        "grounder": _ToyGrounder(backend),
        "refiner": object(),
        "model_ids": (str(sam), ""),
        **kwargs,
    }


TOY = families.GrounderFamily(
    name="toy",
    title="Toy grounder",
    model_types=("toy_grounder",),
    model_class="ToyModel",
    backend=f"{__name__}:_ToyBackend",
    grounder=f"{__name__}:_ToyGrounder",
    engine=f"{__name__}:toy_engine",
    encoder_features=0,
    features_doc="none",
    tiny=None,
)


@pytest.fixture
def toy_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(families, "TEXT_GROUNDERS", (*families.TEXT_GROUNDERS, TOY))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "toy_grounder"}))
    CALLS.clear()
    return tmp_path


def test_the_sam3_record_names_its_engine():
    from grounded_sam.grounding.sam3_grounder import sam3_engine

    assert families.SAM3.engine.endswith(":sam3_engine")
    assert families._resolve(families.SAM3.engine) is sam3_engine


def test_a_new_grounder_family_is_a_record(toy_folder):
    gs = GroundedSAM.from_pretrained(
        sam=toy_folder, clip="local-dir:/not/loaded", device="cpu", dtype="float32", top_k=3
    )
    assert len(CALLS) == 1  # CLIP never looked at: it would have failed to load
    call = CALLS[0]
    assert call["sam"] == toy_folder and call["clip"] == "local-dir:/not/loaded"
    assert call["device"] == torch.device("cpu") and call["dtype"] == torch.float32
    assert call["top_k"] == 3 and gs.top_k == 3
    assert isinstance(gs.grounder, TextGrounder) and gs.grounds_text and gs.scorer is None
    image = np.zeros((6, 10, 3), dtype=np.uint8)
    made = gs.index(image)
    assert made == ("toy index", (6, 10, 3), (6, 10), (str(toy_folder), ""))
    assert gs.predictor.encoded == [(6, 10, 3)]
    with pytest.raises(ValueError, match="toy grounders take no clicks"):
        gs.predict(image, points=[[1, 1]])


def test_a_clip_grounder_is_no_text_grounder(tiny_gs):
    assert not isinstance(tiny_gs.grounder, TextGrounder) and not tiny_gs.grounds_text
