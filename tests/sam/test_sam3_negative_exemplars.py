"""Negative exemplar boxes (SAM 3 box label 0): parity with ``Sam3Model`` given the same
positive and negative box prompts, and the option's checks on every surface."""

from __future__ import annotations

import pytest
import torch

from grounded_sam.grounding.options import QueryOptions
from tests.sam.sam3_models import scene
from tests.sam.test_sam3_parity import _compare, _reference_run, engine, reference  # noqa: F401

POS = [20.0, 10.0, 70.0, 55.0]
NEG = [60.0, 45.0, 95.0, 70.0]


def test_phrase_with_a_negative_box_matches_the_reference(engine, reference):  # noqa: F811
    image = scene()
    index = engine.index(image)
    out, processor = _reference_run(
        reference, image, text="yellow disc", input_boxes=[[NEG]], input_boxes_labels=[[0]]
    )
    found = _compare(engine, index, out, processor, ["yellow disc"], {"negative_exemplars": [NEG]})
    plain = engine.grounder.ground(index, ["yellow disc"], QueryOptions(threshold=0.0))
    with_neg = engine.grounder.ground(
        index, ["yellow disc"], QueryOptions(threshold=0.0, negative_exemplars=[NEG])
    )
    assert not torch.allclose(plain.selection.score, with_neg.selection.score)  # it does act
    assert found.labels == ("yellow disc",)


def test_positive_and_negative_boxes_match_the_reference(engine, reference):  # noqa: F811
    image = scene()
    index = engine.index(image)
    out, processor = _reference_run(
        reference, image, input_boxes=[[POS, NEG]], input_boxes_labels=[[1, 0]]
    )
    opts = {"exemplars": [POS], "negative_exemplars": [NEG]}
    found = _compare(engine, index, out, processor, [], opts)
    assert found.labels == ("exemplar",)


def test_phrases_negatives_and_boxes_in_one_query(engine):  # noqa: F811
    image = scene()
    opts = {"negative": "a dog", "exemplars": [POS], "negative_exemplars": [NEG], "threshold": 0}
    dets = engine.query(engine.index(image), "yellow disc, the dark square", **opts)
    assert len(dets) >= 1
    assert set(dets.data["class_name"]) <= {"yellow disc", "the dark square", "exemplar"}


def test_the_option_is_checked_like_exemplars():
    assert QueryOptions(negative_exemplars=[[1, 2, 3, 4]]).negative_exemplars == ((1, 2, 3, 4),)
    assert QueryOptions(negative_exemplars=[[1, 2, 3, 4]]).per_image
    assert "negative_exemplars" not in QueryOptions().to_dict(per_image=False)
    with pytest.raises(ValueError, match="Negative exemplar box .* has no area"):
        QueryOptions(negative_exemplars=[[5, 5, 5, 9]])
    with pytest.raises(ValueError, match="Bad negative exemplar"):
        QueryOptions(negative_exemplars=[[5, 5, 500, 9]]).check_for_image((90, 120))


def test_the_clip_grounder_refuses_with_what_to_use(tiny_gs):
    index = tiny_gs.index(scene())
    with pytest.raises(ValueError, match="need a SAM 3 checkpoint.*negative phrase"):
        tiny_gs.query(index, "fig", negative_exemplars=[NEG])


def test_cli_and_http_take_the_option():
    from grounded_sam.cli.main import build_parser

    args = build_parser().parse_args(
        ["segment", "x.png", "-p", "fig", "--json", "--negative-exemplar", "1,2,30,40"]
    )
    assert tuple(map(tuple, args.negative_exemplars)) == ((1, 2, 30, 40),)
    from grounded_sam.serve.schemas import QueryRequest

    assert "negative_exemplars" in QueryRequest.model_fields
