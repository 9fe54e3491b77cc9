"""Parity of :class:`FastMaskDecoder` with transformers' ``SamMaskDecoder`` on the same weights.

(``tests/sam/test_parity.py`` ties transformers' SAM to Meta's; everything our predictor does
goes through the fast decoder, so those tests cover it end to end against Meta as well.)

Two models: the package's tiny random SAM (through the predictor's own prompt encoder) and a
full-size SAM mask decoder + prompt encoder (hidden 256, 8 heads, 64x64 embedding) with
seeded random weights of realistic magnitude. Every prompt kind (point, multi-point, box,
point+box, box + mask input, mask input alone), multimask and single output, and both image-
side forms (absorbed and standard projections) are compared.

Tolerance. Both sides compute the same function in float32; the fast decoder sums in a
different order (image-side projections folded into the token side, attention over shared
keys, upscaling as matrix products), which moves each layer's result by float32 rounding
(~1e-7 relative per operation). Logits pass when ``|ours - ref| <= 1e-3 + 1e-4 * |ref|``
(measured max: ~1e-4 on the tiny model, a few 1e-5..1e-4 at full size; printed with
``GS_SAM_PARITY_REPORT=1 pytest -s``). A real error (wrong head split, missing bias, swapped
upscaling taps) moves logits by O(0.1-10). Thresholded masks must agree to IoU >= 0.999: only
pixels whose logit lies within rounding of 0 may flip.
"""

from __future__ import annotations

import os

import pytest
import torch

from grounded_sam.sam.fast_decoder import FastMaskDecoder

from .decoder_parity import KINDS, MEASURED, assert_parity, make_prompts


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    if os.environ.get("GS_SAM_PARITY_REPORT"):
        print("\nmeasured fast decoder vs transformers SamMaskDecoder:")
        for what, value in sorted(MEASURED.items()):
            print(f"  {what:40s} {value:.3g}")


class DecoderParts:
    """Prompt encoder, mask decoder and image-wide positional encoding of one SAM."""

    def __init__(self, prompt_encoder, mask_decoder, image_size: int, side: int) -> None:
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        self.image_size = image_size  # input frame side (1024 for released SAM)
        self.side = side  # embedding side E
        grid = torch.ones(side, side)
        xy = torch.stack([grid.cumsum(1) - 0.5, grid.cumsum(0) - 0.5], dim=-1) / side
        self.image_pe = prompt_encoder.shared_embedding(xy).permute(2, 0, 1)[None]


@pytest.fixture(scope="module")
def tiny(sam_model) -> DecoderParts:
    cfg = sam_model.config
    return DecoderParts(
        sam_model.prompt_encoder,
        sam_model.mask_decoder,
        cfg.vision_config.image_size,
        cfg.prompt_encoder_config.image_embedding_size,
    )


def _realistic_(module: torch.nn.Module, seed: int) -> None:
    """N(0, 1/fan_in) matrices, sharpened hypernetwork outputs (as benchmarks' realistic
    init), but independent 2x2 upscaling taps: tied taps would hide a layout error."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "positional_embedding" in name:
                p.copy_(torch.randn(p.shape, generator=gen))
            elif p.ndim >= 2 and "layer_norm" not in name:
                p.copy_(torch.randn(p.shape, generator=gen) / p[0].numel() ** 0.5)
            elif p.ndim == 1 and "layer_norm" not in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
            if "output_hypernetworks_mlps" in name and "proj_out" in name:
                p.mul_(30.0)


@pytest.fixture(scope="module")
def full() -> DecoderParts:
    from transformers import SamConfig
    from transformers.models.sam.modeling_sam import SamMaskDecoder, SamPromptEncoder

    config = SamConfig()
    parts = torch.nn.Module()
    parts.prompt_encoder = SamPromptEncoder(config)
    parts.mask_decoder = SamMaskDecoder(config.mask_decoder_config)
    parts.eval()
    _realistic_(parts, seed=0)
    return DecoderParts(
        parts.prompt_encoder,
        parts.mask_decoder,
        config.vision_config.image_size,
        config.prompt_encoder_config.image_embedding_size,
    )


def check(parts: DecoderParts, kind: str, multimask: bool, absorb: bool | None, tag: str):
    batch = 3
    gen = torch.Generator().manual_seed(1)
    c = parts.mask_decoder.hidden_size
    emb = torch.randn(1, c, parts.side, parts.side, generator=gen)
    sparse, dense = make_prompts(parts, kind, batch, seed=2)
    with torch.no_grad():
        ref_masks, ref_iou = parts.mask_decoder(
            image_embeddings=emb.expand(batch, -1, -1, -1),
            image_positional_embeddings=parts.image_pe.expand(batch, -1, -1, -1),
            sparse_prompt_embeddings=sparse
            if sparse is not None
            else torch.zeros(batch, 1, 0, c),
            dense_prompt_embeddings=dense.expand(batch, -1, -1, -1),
            multimask_output=multimask,
        )
        ref_masks, ref_iou = ref_masks[:, 0], ref_iou[:, 0]
        fast = FastMaskDecoder(parts.mask_decoder, absorb=absorb)
        shared = None
        if kind not in ("box+mask", "mask"):
            dense = dense[:1]
            shared = fast.prepare(emb, parts.image_pe, dense)
        masks, iou = fast(
            emb,
            parts.image_pe,
            None if sparse is None else sparse[:, 0],
            dense,
            multimask,
            shared=shared,
        )
    assert_parity(masks, iou, ref_masks, ref_iou, tag)


@pytest.mark.parametrize("absorb", [None, True, False])
@pytest.mark.parametrize("multimask", [True, False])
@pytest.mark.parametrize("kind", KINDS)
def test_tiny_decoder_parity(tiny, kind, multimask, absorb):
    check(tiny, kind, multimask, absorb, "tiny")


@pytest.mark.parametrize("multimask", [True, False])
@pytest.mark.parametrize("kind", KINDS)
def test_full_size_decoder_parity(full, kind, multimask):
    check(full, kind, multimask, None, "full")


def test_full_size_standard_projections(full):
    """The standard (non-absorbed) image side at full size, for a point+box prompt."""
    check(full, "point+box", True, False, "full/standard")


def test_rejects_non_sam_layout():
    decoder = torch.nn.Module()
    decoder.transformer = torch.nn.Module()
    decoder.transformer.layers = torch.nn.ModuleList()
    with pytest.raises(ValueError, match="two-way transformer"):
        FastMaskDecoder(decoder)
