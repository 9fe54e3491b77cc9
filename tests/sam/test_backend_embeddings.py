"""A kept embedding decoded by a predictor of another SAM family is refused with a clear error."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from grounded_sam.sam.factory import load_predictor
from grounded_sam.sam.tiny import save_tiny_sam2, save_tiny_sam_hq

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def predictors(tmp_path_factory, sam_model_dir):
    root = tmp_path_factory.mktemp("families")
    return {
        "sam": load_predictor(sam_model_dir, CPU, torch.float32),
        "sam_hq": load_predictor(save_tiny_sam_hq(root / "hq"), CPU, torch.float32),
        "sam2": load_predictor(save_tiny_sam2(root / "sam2"), CPU, torch.float32),
    }


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
