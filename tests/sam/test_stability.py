"""Sub-pixel stability scores (``grounded_sam.sam.stability``): counted phase by phase, they
equal the stability score of an explicit bilinear upsample."""

from __future__ import annotations

import pytest
import torch

from grounded_sam.sam.stability import subpixel_stability, upsample_phases
from grounded_sam.utils.masks import stability_score


@pytest.mark.parametrize("factor", [1, 2, 3])
def test_subpixel_stability_equals_an_explicit_upsample(factor):
    logits = torch.randn(6, 12, 14, generator=torch.Generator().manual_seed(0)) * 3
    logits[0] = -5.0  # empty even at threshold - offset
    up = torch.nn.functional.interpolate(
        logits[:, None], scale_factor=factor, mode="bilinear", align_corners=False
    )[:, 0]
    # the phases interleave into the upsample
    rows = upsample_phases(logits, factor, 1)
    for a, row_phase in enumerate(rows):
        for b, phase in enumerate(upsample_phases(row_phase, factor, 2)):
            assert torch.allclose(phase, up[:, a::factor, b::factor], atol=1e-5)
    # part of the upsampled frame is "padding" and is not counted
    valid = (12 * factor - factor // 2 - 1, 14 * factor - 1)
    stab = subpixel_stability(logits, valid, 0.0, 1.0, factor=factor)
    assert torch.equal(stab, stability_score(up[:, : valid[0], : valid[1]], 0.0, 1.0))
    assert stab[0] == 0.0 and (stab[1:] > 0).all()
