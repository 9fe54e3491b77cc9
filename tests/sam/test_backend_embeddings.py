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
