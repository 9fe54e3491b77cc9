"""Box re-prompts kept in the index: decoded once, saved and loaded with it."""

from __future__ import annotations

import torch

from grounded_sam import EverythingSettings, GroundedSAM
from grounded_sam.grounding.boxes import region_box_masks
from grounded_sam.grounding.index import ImageIndex

from .oracle import OracleSam, OracleScorer, make_scene


def _gs(scene, **kwargs) -> GroundedSAM:
    return GroundedSAM(
        OracleSam(scene),
        OracleScorer(scene),
        proposal_settings=EverythingSettings(points_per_side=12),
        **kwargs,
    )


def test_prefetched_decodes_equal_fresh_ones_and_survive_save(tmp_path):
    scene = make_scene()
    gs = _gs(scene)
    idx = gs.index(scene.image)
    cache = idx.box_decodes[gs.refine]
    assert bool(cache.done.all()) and len(idx) > 1
    # what the index holds is what decoding the boxes now gives
    fresh = _gs(scene, prefetch_boxes=False).index(scene.image)
    regions = torch.arange(len(fresh))
    logits, iou = region_box_masks(gs.predictor, fresh, regions, gs.refine)
    torch.testing.assert_close(logits, cache.low_res_logits)
    torch.testing.assert_close(iou, cache.iou)
    assert (logits > 0).flatten(1).any(1).all()  # real masks, not zeros

    path = idx.save(tmp_path / "a.gsindex")
    back = ImageIndex.load(path)
    torch.testing.assert_close(back.box_decodes[gs.refine].low_res_logits, cache.low_res_logits)
    assert bool(back.box_decodes[gs.refine].done.all())
    assert back.nbytes == idx.nbytes > 0
    # a loaded index answers without decoding again
    dec = gs.predictor.decoder_calls
    gs.query(back, "red square")
    assert gs.predictor.decoder_calls == dec


def test_refine_levels_are_kept_apart():
    scene = make_scene()
    gs = _gs(scene, prefetch_boxes=False)
    idx = gs.index(scene.image)
    gs.query(idx, "red square", refine=0)
    gs.query(idx, "red square", refine=2)
    assert sorted(idx.box_decodes) == [0, 2]
