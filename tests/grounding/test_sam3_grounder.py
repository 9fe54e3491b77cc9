"""SAM 3 as the engine's grounder: from_pretrained, index, query knobs, saved indexes, refusals."""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import pytest
import supervision as sv
import torch

from grounded_sam.grounding.index import ImageIndex
from grounded_sam.grounding.sam3_grounder import Sam3Candidates, Sam3Grounder, Sam3Refiner
from grounded_sam.grounding.selection import Selection
from tests.sam.sam3_models import scene, tiny_sam3_folder


@pytest.fixture(scope="module")
def gs():
    from grounded_sam import GroundedSAM

    return GroundedSAM.from_pretrained(
        sam=tiny_sam3_folder(), device="cpu", threshold=0.2, top_k=None
    )


@pytest.fixture(scope="module")
def index(gs):
    return gs.index(scene())


def _low_threshold(gs, index, phrases, keep: int = 6) -> float:
    """A threshold that keeps at least ``keep`` detections of every phrase (random weights)."""
    backend = gs.predictor
    scores = backend.detect(index.embedding, backend.text_prompts(phrases)).scores
    ranked = torch.sort(scores, dim=1, descending=True).values
    # Half-way between the keep-th and the next score: no score sits on the threshold, so a
    # batched pass (other float32 summation order, other CPU kernels) keeps the same queries.
    return float(((ranked[:, keep - 1] + ranked[:, keep]) / 2).min())


def test_from_pretrained_builds_sam3_without_clip(gs, caplog):
    from grounded_sam import GroundedSAM

    assert gs.grounds_text and gs.scorer is None and isinstance(gs.grounder, Sam3Grounder)
    assert isinstance(gs.refiner, Sam3Refiner) and gs.model_ids[1] == ""
    with caplog.at_level(logging.INFO, logger="grounded_sam"):
        other = GroundedSAM.from_pretrained(
            sam=tiny_sam3_folder(), clip="local-dir:/does/not/exist", device="cpu"
        )  # a CLIP that cannot load: never looked at
    said = "CLIP local-dir:/does/not/exist is ignored"
    ignored = [r for r in caplog.records if said in r.message]
    assert len(ignored) == 1 and other.scorer is None


def test_index_keeps_the_vision_features(gs, index):
    assert isinstance(index, ImageIndex) and len(index) == 0 and index.size == (90, 120)
    emb_shape, feat_shapes = gs.predictor.encoder_shapes()
    assert tuple(index.embedding.embeddings.shape) == emb_shape
    assert tuple(tuple(f.shape) for f in index.embedding.features) == feat_shapes
    assert index.nbytes > index.embedding.nbytes > 0


def test_query_gives_the_clip_paths_detections(gs, index):
    phrases = ["a dog", "yellow disc", "dark square"]
    t = _low_threshold(gs, index, phrases)
    dets = gs.query(index, phrases, threshold=t, keep_parts=True)
    assert isinstance(dets, sv.Detections) and len(dets) >= 1
    assert dets.mask.shape[1:] == (90, 120) and dets.mask.dtype == bool
    assert np.all(dets.confidence >= t) and np.all(np.diff(dets.confidence) <= 0)
    for key in ("class_name", "clip_score", "sam_iou", "proposal_index", "query_score",
                "presence_score", "query_box"):  # fmt: skip
        assert len(dets.data[key]) == len(dets), key
    assert np.isnan(dets.data["clip_score"]).all() and np.isnan(dets.data["sam_iou"]).all()
    np.testing.assert_allclose(
        dets.confidence, dets.data["query_score"] * dets.data["presence_score"], rtol=1e-5
    )
    assert set(dets.data["class_name"]) <= set(phrases)
    meta = dets.metadata
    assert meta["phrases"] == phrases and meta["image_size"] == (90, 120)
    assert meta["model_ids"]["sam_family"] == "sam3" and meta["model_ids"]["clip"] == ""
    # xyxy is the tight box of each mask, as for CLIP results
    ys, xs = np.nonzero(dets.mask[0])
    assert dets.xyxy[0].tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def test_one_label_per_instance_keeps_the_better_phrase(gs, index):
    t = _low_threshold(gs, index, ["a dog"])
    opts = gs.options.replace(threshold=t, keep_parts=True)
    single = gs.refiner.refine(index, gs.grounder.ground(index, ["a dog"], opts), opts)
    # two phrases with the same tokens find the same instances: each is kept once, and on a
    # tie the earlier phrase keeps it
    twice = gs.grounder.ground(index, ["a dog", "A dog"], opts)
    assert len(twice) == 2 * len(gs.grounder.ground(index, ["a dog"], opts)) > 0
    refined = gs.refiner.refine(index, twice, opts)
    assert len(refined) == len(single) >= 1
    assert refined.candidates.selection.phrase.tolist() == [0] * len(single)
    torch.testing.assert_close(
        refined.candidates.selection.score, single.candidates.selection.score
    )


def test_an_instance_claimed_by_two_phrases_keeps_the_better_score(gs, index):
    h, w = index.size
    low = torch.full((2, 32, 32), -5.0)
    low[:, 4:20, 4:20] = 5.0  # the same instance, twice
    found = Sam3Candidates(
        Selection(torch.tensor([3, 7]), torch.tensor([1, 0]), torch.tensor([0.9, 0.6])),
        torch.tensor([0.95, 0.7]), ("cat", "dog"), low, torch.zeros(2, 4), torch.ones(2),
    )  # fmt: skip
    refined = gs.refiner.refine(index, found, gs.options)
    assert (
        len(refined) == 1
        and refined.candidates.labels[int(refined.candidates.selection.phrase[0])] == "dog"
    )
    assert refined.masks.shape == (1, h, w)


def test_negative_detections_veto_the_instances_they_win():
    from grounded_sam.grounding.sam3_grounder import vetoed_by_negatives

    masks = torch.zeros(4, 8, 8, dtype=torch.bool)
    masks[0, :4] = masks[1, :4] = masks[2, :4] = True  # one instance, three detections
    masks[3, 5:] = True  # another instance
    score = torch.tensor([0.9, 0.5, 0.7, 0.95])
    is_neg = torch.tensor([False, False, True, False])
    # the negative (0.7) beats the 0.5 detection it overlaps, not the 0.9 one nor the far one
    assert vetoed_by_negatives(masks, score, is_neg).tolist() == [False, True, False, False]


def test_negative_phrases_in_a_query(gs, index):
    from grounded_sam.grounding.sam3_grounder import vetoed_by_negatives

    t = _low_threshold(gs, index, ["a dog", "zebra"])
    opts = gs.options.replace(threshold=t, keep_parts=True)
    pos = gs.grounder.ground(index, ["a dog"], opts)
    neg = gs.grounder.ground(index, ["zebra"], opts)
    got = gs.grounder.ground(index, ["a dog"], opts.replace(negative="zebra"))
    masks = torch.cat([pos.low_res, neg.low_res]).sigmoid() > 0.5
    score = torch.cat([pos.selection.score, neg.selection.score])
    is_neg = torch.arange(len(score)) >= len(pos)
    expect = ~vetoed_by_negatives(masks, score, is_neg)[: len(pos)]
    assert len(pos) >= 1 and len(neg) >= 1
    assert got.selection.region.tolist() == pos.selection.region[expect].tolist()
    assert got.labels == ("a dog",) and set(got.selection.phrase.tolist()) <= {0}
    with pytest.raises(ValueError, match="both a phrase and a negative"):
        gs.query(index, "a dog", negative="A dog")


def test_top_k_and_parts(gs, index):
    t = _low_threshold(gs, index, ["a dog"], keep=10)
    many = gs.query(index, "a dog", threshold=t, keep_parts=True)
    few = gs.query(index, "a dog", threshold=t, keep_parts=True, top_k=1)
    assert len(many) >= 2 and len(few) == 1
    assert few.confidence[0] == pytest.approx(many.confidence[0])
    no_parts = gs.query(index, "a dog", threshold=t, part_thresh=0.0)
    assert len(no_parts) <= len(many)


BOX = [20.0, 10.0, 70.0, 55.0]


def _box_threshold(gs, index, keep: int = 6) -> float:
    backend = gs.predictor
    prompt = backend.box_prompt(index.embedding, torch.tensor([BOX]))
    scores = backend.detect(index.embedding, prompt).scores
    return float(torch.sort(scores.flatten(), descending=True).values[keep])


def test_exemplars(gs, index):
    t = _box_threshold(gs, index)
    dets = gs.query(index, exemplars=[BOX], threshold=t, exemplar_label="mug")
    assert len(dets) >= 1 and set(dets.data["class_name"]) == {"mug"}
    assert dets.metadata["phrases"] == ["mug"]
    mixed = gs.query(index, "a dog", exemplars=[BOX], threshold=t)
    assert mixed.metadata["phrases"] == ["a dog", "exemplar"]
    assert set(mixed.data["class_name"]) <= {"a dog", "exemplar"}


def test_clicks_filter_the_detections(gs, index):
    t = _box_threshold(gs, index)
    opts = gs.options.replace(threshold=t, exemplars=[BOX], keep_parts=True)
    best = gs.grounder.ground(index, [], opts).take(torch.tensor([0]))
    small = best.low_res[0].sigmoid() > 0.5
    full = gs.predictor.upscale(best.low_res, index.size)[0]
    (h, w), (sh, sw) = index.size, small.shape
    inside = [(x, y) for y, x in torch.nonzero(full).tolist() if small[y * sh // h, x * sw // w]]
    x, y = inside[len(inside) // 2]  # inside the best detection at both resolutions
    clicked = gs.query(index, exemplars=[BOX], threshold=t, keep_parts=True, points=[[x, y]])
    assert len(clicked) >= 1 and all(m[y, x] for m in clicked.mask)
    away = gs.query(index, exemplars=[BOX], threshold=t, keep_parts=True, points=[[x, y]],
                    point_labels=[0])  # fmt: skip
    assert not any(m[y, x] for m in away.mask)


def test_min_region_area_removes_small_islands(gs, index):
    import cv2

    t = _low_threshold(gs, index, ["a dog"])

    def small_islands(masks: np.ndarray) -> int:
        count = 0
        for mask in masks:
            _, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
            areas = np.sort(stats[1:, cv2.CC_STAT_AREA])
            count += int((areas[:-1] < 40).sum())  # the largest stays, as in Meta's cleaning
        return count

    raw = gs.query(index, "a dog", threshold=t, keep_parts=True)
    dets = gs.query(index, "a dog", threshold=t, keep_parts=True, min_region_area=40)
    assert small_islands(raw.mask) > 0 and len(dets) >= 1
    assert small_islands(dets.mask) == 0


def test_calibration_modes_give_sam3s_own_scores(gs, index):
    t = _low_threshold(gs, index, ["a dog", "cat"])
    a = gs.query(index, ["a dog", "cat"], threshold=t, calibration="joint")
    b = gs.query(index, ["a dog", "cat"], threshold=t, calibration="per_phrase")
    np.testing.assert_array_equal(a.confidence, b.confidence)


def test_saved_index_round_trip_is_validated(gs, index, tmp_path, tiny_gs):
    path = index.save(tmp_path / "a.gsindex")
    loaded = gs.load_index(path)
    ours = [index.embedding.embeddings, *index.embedding.features]
    back = [loaded.embedding.embeddings, *loaded.embedding.features]
    for x, y in zip(ours, back, strict=True):
        torch.testing.assert_close(x, y)
    t = _low_threshold(gs, index, ["a dog"])
    a, b = gs.query(index, "a dog", threshold=t), gs.query(loaded, "a dog", threshold=t)
    np.testing.assert_array_equal(a.mask, b.mask)
    # a CLIP+SAM engine refuses it, and this engine refuses theirs
    with pytest.raises(ValueError, match="does not fit this engine|other model weights"):
        tiny_gs.load_index(path)
    clip_index = tiny_gs.index(scene()).save(tmp_path / "clip.gsindex")
    with pytest.raises(ValueError, match="does not fit this engine|other model weights"):
        gs.load_index(clip_index)
    # features of the wrong shape (another SAM 3 size) are refused when loaded
    small = [f[..., ::2, ::2].contiguous() for f in index.embedding.features]
    odd = replace(index, embedding=replace(index.embedding, features=tuple(small)))
    with pytest.raises(ValueError, match=r"features\[0\]' has shape"):
        gs.load_index(odd.save(tmp_path / "odd.gsindex"))


def test_predict_and_everything_refuse_with_what_to_use(gs, index):
    from grounded_sam.grounding.sam3_grounder import NO_EVERYTHING, NO_PREDICT
    from grounded_sam.sam.loading import SAM_ALIASES

    image = scene()
    for call in (lambda: gs.predict(index, points=[[10, 10]]), lambda: gs.predict(image)):
        with pytest.raises(ValueError) as info:
            call()
        assert str(info.value) == NO_PREDICT and "\n" not in NO_PREDICT
    with pytest.raises(ValueError) as info:
        gs.everything(index)
    assert str(info.value) == NO_EVERYTHING and "\n" not in NO_EVERYTHING
    assert "not its tracker" in NO_PREDICT and "automatic mask generator" in NO_EVERYTHING
    # every checkpoint the messages name is a known alias of a SAM family
    for name in ("vit_b", "vit_h", "hq_vit_b", "sam2.1_t"):
        assert f"'{name}'" in NO_PREDICT and name in SAM_ALIASES
    assert "'sam2.1_t'" in NO_EVERYTHING and "sam='vit_b'" in NO_EVERYTHING
    # and the SAM 3 calls they suggest run as written, on the same index
    assert "exemplars=[[x1, y1, x2, y2]]" in NO_PREDICT and "points=[[x, y]]" in NO_PREDICT
    h, w = index.size
    by_box = gs.query(index, "phrase", exemplars=[[w // 4, h // 4, w // 2, h // 2]], threshold=0)
    by_click = gs.query(index, "phrase", points=[[w // 3, h // 3]], threshold=0)
    assert isinstance(by_box, sv.Detections) and len(by_box) > 0
    assert isinstance(by_click, sv.Detections)
    assert all(m[h // 3, w // 3] for m in by_click.mask)  # each contains the click
    assert "query(index, 'object', threshold=0.3)" in NO_EVERYTHING
    assert isinstance(gs.query(index, "object", threshold=0.3), sv.Detections)


def test_segment_many_and_index_many(gs):
    images = [scene(seed=1), scene(60, 80, seed=2)]
    got = list(gs.segment_many(images, "a dog", show_progress=False, threshold=0.0, top_k=2))
    assert [type(d) for _, d in got] == [sv.Detections] * 2
    assert all(1 <= len(d) <= 2 for _, d in got)
    one = gs.query(gs.index(images[1]), "a dog", threshold=0.0, top_k=2)
    np.testing.assert_array_equal(got[1][1].mask, one.mask)
    indexes = [i for _, i in gs.index_many(images, show_progress=False)]
    assert [i.size for i in indexes] == [(90, 120), (60, 80)]
