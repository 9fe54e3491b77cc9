"""The SAM family registry: every record resolves, lookups, and the readers agree with it."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from grounded_sam.sam import families
from grounded_sam.sam.factory import create_predictor
from grounded_sam.sam.fast_decoder import FastMaskDecoder
from grounded_sam.sam.heads import DecoderHead
from grounded_sam.sam.loading import SAM_ALIASES, SAM_FAMILIES, load_sam_model
from grounded_sam.sam.predictor import SamPredictor
from grounded_sam.sam.transforms import SamTransform

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """One tiny model per family, built by the record's own tiny builder."""
    out = {}
    for family in families.FAMILIES:
        folder = family.save_tiny(tmp_path_factory.mktemp(family.name), image_size=128)
        out[family.name] = load_sam_model(folder, CPU, torch.float32)
    return out


def test_the_three_families_are_registered_sam_first():
    assert families.names() == ("sam", "sam_hq", "sam2")
    assert families.model_types() == ("sam", "sam_hq", "sam2", "sam2_video")
    assert families.FAMILIES[0] is families.get("sam")


@pytest.mark.parametrize("family", families.FAMILIES, ids=lambda f: f.name)
def test_every_record_resolves(family):
    import transformers

    cls = family.predictor_class()
    assert issubclass(cls, SamPredictor) and cls.FAMILY == family.name
    assert family.head.name == family.name and isinstance(family.head, DecoderHead)
    assert isinstance(getattr(transformers, family.model_class), type)
    write_graphs, make_manifest = family.onnx_exporter()
    assert callable(write_graphs) and callable(make_manifest)
    assert family.model_types[0] == family.name
    assert family.example_id and all(v.count("/") == 1 for v in family.aliases.values())
    assert family.encoder_features >= 0 and family.features_doc


def test_lookup_by_name_model_type_and_decoder(tiny_models):
    assert families.get("sam2_video") is families.get("sam2")
    assert families.for_model_type("sam_hq").title == "HQ-SAM"
    for name, model in tiny_models.items():
        assert families.for_model(model).name == name
        assert families.for_decoder(model.mask_decoder).name == name
        assert FastMaskDecoder(model.mask_decoder).head is families.get(name).head


@pytest.mark.parametrize(
    "lookup",
    [
        lambda: families.get("sam3"),
        lambda: families.for_model_type("clip"),
        lambda: families.for_model(SimpleNamespace(config=SimpleNamespace(model_type="sam3"))),
    ],
)
def test_unknown_family_is_a_clear_error(lookup):
    with pytest.raises(ValueError, match=r"no supported SAM family.*'sam', 'sam_hq', 'sam2'"):
        lookup()


def test_aliases_and_loading_tables_are_views_of_the_registry():
    assert SAM_ALIASES == families.aliases()
    assert SAM_ALIASES["hq_vit_b"] == "syscv-community/sam-hq-vit-base"
    assert SAM_ALIASES["sam2.1_t"] == "facebook/sam2.1-hiera-tiny"
    assert SAM_FAMILIES["sam2_video"] == ("Sam2Model", "SAM 2 / 2.1")
    assert set(SAM_FAMILIES) == set(families.model_types())
    assert "SAM 2 / 2.1 ('sam2' or 'sam2_video')" in families.describe()


def test_factory_picks_the_records_predictor_for_each_tiny_model(tiny_models):
    for name, model in tiny_models.items():
        family = families.get(name)
        predictor = create_predictor(model)
        assert type(predictor) is family.predictor_class()
        assert predictor.family is family
        assert predictor._fast.head is family.head
        assert isinstance(predictor.transform, SamTransform)
        assert predictor.transform == family.transform(model.config)
        assert predictor.transform.target_length == 128
        embedding = predictor.encode(torch.zeros(40, 60, 3, dtype=torch.uint8).numpy())
        assert len(embedding.features) == family.encoder_features


def test_factory_refuses_a_model_of_no_family():
    model = torch.nn.Linear(2, 2)
    model.config = SimpleNamespace(model_type="sam3")
    with pytest.raises(ValueError, match=r"'sam3'.*supported: 'sam', 'sam_hq', 'sam2'"):
        create_predictor(model)


def test_tiny_builds_any_family_by_name(tmp_path):
    from grounded_sam.sam.tiny import save_tiny

    folder = save_tiny("sam2_video", tmp_path / "s2", image_size=64)
    assert families.for_model(load_sam_model(folder, CPU, torch.float32)).name == "sam2"
    with pytest.raises(ValueError, match="no supported SAM family"):
        save_tiny("sam3", tmp_path / "x")
