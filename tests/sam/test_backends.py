"""Every SAM back-end through the whole engine, and what holds across families.

* The pipeline (index / save / load / query, predict, everything) on tiny HQ-SAM and SAM 2.1
  (parity with the reference packages is in ``test_hq.py`` / ``test_sam2.py``).
* A kept embedding decoded by a predictor of another SAM family is refused with a clear error.
* ``compile=`` gives the plain results for HQ-SAM and SAM 2 (slow).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from grounded_sam.sam import families
from grounded_sam.sam.hq import SamHQPredictor
from grounded_sam.sam.sam2 import Sam2Predictor

from .images import shapes_image


@pytest.fixture(scope="module")
def predictors(predictor, hq, sam2):
    return {"sam": predictor, "sam_hq": hq, "sam2": sam2}


@pytest.mark.parametrize(
    ("model_dir", "cls", "stability"),
    [("hq_dir", SamHQPredictor, 0.95), ("sam2_dir", Sam2Predictor, 0.0)],
    ids=["sam_hq", "sam2"],
)
def test_pipeline_end_to_end(request, model_dir, cls, stability, tiny_model_specs, tmp_path):
    """index -> save -> load -> query gives the same detections; predict and everything run;
    a saved index whose extra features are broken is refused with the field named."""
    from grounded_sam import EverythingSettings, GroundedSAM, ImageIndex
    from grounded_sam.sam.proposals import MaskFrame

    gs = GroundedSAM.from_pretrained(
        sam=str(request.getfixturevalue(model_dir)),
        clip=tiny_model_specs[1],
        device="cpu",
        proposal_settings=EverythingSettings(
            points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=stability
        ),
        threshold=0.0,
    )
    assert isinstance(gs.predictor, cls)
    image = shapes_image(160, 120)
    index = gs.index(image)
    assert len(index) > 0
    path = index.save(tmp_path / "family.gsindex")
    loaded = ImageIndex.load(path)
    assert len(loaded.embedding.features) == families.get(cls.FAMILY).encoder_features
    assert loaded.proposals.frame == index.proposals.frame == MaskFrame.of(gs.predictor.transform)
    for got, kept in zip(loaded.embedding.features, index.embedding.features, strict=True):
        torch.testing.assert_close(got, kept)
    a, b = gs.query(index, "a square"), gs.query(loaded, "a square")
    assert len(a) > 0 and len(a) == len(b)
    np.testing.assert_array_equal(a.mask, b.mask)
    dets = gs.predict(loaded, points=[[60, 80]], box=[10, 10, 100, 140])
    assert len(dets) == 3 and dets.mask.any() and dets.mask.shape[1:] == image.shape[:2]
    records = gs.everything(loaded, points_per_side=4, pred_iou_thresh=0.0)
    assert records and all(r["segmentation"].shape == image.shape[:2] for r in records)
    blob = torch.load(path, weights_only=True)
    blob["features"][0][0, 0, 0, 0] = float("nan")
    torch.save(blob, tmp_path / "bad.gsindex")
    with pytest.raises(ValueError, match=r"features\[0\]"):
        ImageIndex.load(tmp_path / "bad.gsindex")


@pytest.mark.parametrize(
    ("made_by", "used_by", "needed"),
    [
        ("sam", "sam_hq", "needs 1: HQ-SAM's early ViT features"),
        ("sam2", "sam_hq", "needs 1: HQ-SAM's early ViT features"),
        ("sam", "sam2", "needs 2: SAM 2's two high-resolution"),
        ("sam_hq", "sam2", "needs 2: SAM 2's two high-resolution"),
        ("sam2", "sam", "needs 0: none"),
        ("sam_hq", "sam", "needs 0: none"),
    ],
)
def test_embedding_of_another_family_is_refused(predictors, made_by, used_by, needed):
    image = np.random.default_rng(0).integers(0, 255, (90, 120, 3), dtype=np.uint8)
    embedding = predictors[made_by].encode(image)
    points = torch.tensor([[[40.0, 30.0]]])
    labels = torch.ones(1, 1, dtype=torch.long)
    with pytest.raises(ValueError, match=f"does not fit this model.*{needed}.*encode the image"):
        predictors[used_by].decode(embedding, points=points, labels=labels)
    # the family's own embedding decodes
    own = predictors[used_by].encode(image)
    out = predictors[used_by].decode(own, points=points, labels=labels)
    assert out.low_res_logits.shape[:2] == (1, 3)


@pytest.mark.slow  # dynamo tracing of two families: about a minute of CPU
@pytest.mark.parametrize("family", ["sam_hq", "sam2"])
def test_compiled_family_predictor_matches(predictors, family):
    """compile= also covers HQ-SAM and SAM 2 (encoder and decoder; 'eager' backend here)."""
    from grounded_sam.sam.factory import create_predictor

    plain = predictors[family]
    compiled = create_predictor(plain.model, compile="eager")
    assert type(compiled) is type(plain) and compiled.compiled
    image = np.random.default_rng(1).integers(0, 255, (90, 120, 3), dtype=np.uint8)
    a_emb, b_emb = plain.encode(image), compiled.encode(image)
    torch.testing.assert_close(b_emb.embeddings, a_emb.embeddings)
    for x, y in zip(b_emb.features, a_emb.features, strict=True):
        torch.testing.assert_close(x, y)
    kwargs = {
        "points": torch.tensor([[[20.0, 30.0]], [[100.0, 40.0]], [[60.0, 70.0]]]),
        "labels": torch.ones(3, 1, dtype=torch.long),
    }
    for multimask in (True, False):
        a = plain.decode(a_emb, multimask_output=multimask, **kwargs)
        b = compiled.decode(b_emb, multimask_output=multimask, **kwargs)  # B=3 padded to 4
        assert b.low_res_logits.shape == a.low_res_logits.shape
        torch.testing.assert_close(b.low_res_logits, a.low_res_logits, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(b.iou_scores, a.iou_scores, atol=1e-5, rtol=1e-5)
