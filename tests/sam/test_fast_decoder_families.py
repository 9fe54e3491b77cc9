"""Parity of :class:`FastMaskDecoder` for HQ-SAM and SAM 2 with their straightforward decoders.

References on the same weights:

* SAM 2: transformers' ``Sam2MaskDecoder.forward`` (tied to Meta's ``sam2`` end to end by
  ``tests/sam/test_sam2.py``), including its dynamic single-mask fallback;
* HQ-SAM: :func:`grounded_sam.sam.hq.hq_mask_decoder`, SysCV's data flow on transformers'
  modules (tied to ``segment_anything_hq`` by ``tests/sam/test_hq.py``; transformers' own
  ``SamHQMaskDecoder.forward`` is not SysCV's function, see that function's docstring).

Two sizes per family: the package's tiny random model, and the released decoder size (hidden
256, 8 heads, 64x64 embedding, HQ ``vit_dim`` 768) with a tiny vision tower that is not used
(embeddings and encoder features are random tensors). Every prompt kind, multimask and
single output, both image-side forms, and HQ's ``hq_token_only``.

Tolerance and why: as ``tests/sam/test_fast_decoder.py`` (same function in float32, summed
in another order): ``|ours - ref| <= 1e-3 + 1e-4 * |ref|`` on logits and IoUs, thresholded
masks IoU >= 0.999. Measured maxima print with ``GS_SAM_PARITY_REPORT=1 pytest -s``.
"""

from __future__ import annotations

import os

import pytest
import torch

from grounded_sam.sam.fast_decoder import FastMaskDecoder
from grounded_sam.sam.hq import hq_mask_decoder
from grounded_sam.sam.tiny import _scale_random, tiny_sam2_config, tiny_sam_hq_config

from .decoder_parity import KINDS, MEASURED, assert_parity, make_prompts

BATCH = 4


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    if os.environ.get("GS_SAM_PARITY_REPORT"):
        print("\nmeasured fast decoder vs the families' reference decoders:")
        for what, value in sorted(MEASURED.items()):
            print(f"  {what:45s} {value:.3g}")


def _build(family: str, full: bool) -> torch.nn.Module:
    """A model of the family: tiny, or with the released prompt encoder / decoder sizes."""
    import transformers as tf

    if family == "sam2":
        cfg = tiny_sam2_config()
        if full:
            cfg = tf.Sam2Config(vision_config=cfg.vision_config.to_dict())
        cls = tf.Sam2Model
    else:
        cfg = tiny_sam_hq_config()
        if full:  # the prompt encoder's Fourier features come from the vision config
            vision = cfg.vision_config.to_dict() | {"output_channels": 256, "num_pos_feats": 128}
            cfg = tf.SamHQConfig(vision_config=vision)
        cls = tf.SamHQModel
    torch.manual_seed(0)
    model = cls(cfg).eval()
    _scale_random(model, seed=0)
    return model


class Case:
    """A model with a random image embedding and encoder features of its family."""

    def __init__(self, family: str, full: bool) -> None:
        self.family = family
        self.model = _build(family, full)
        dec = self.model.mask_decoder
        self.prompt_encoder = self.model.prompt_encoder
        self.image_size = int(self.prompt_encoder.input_image_size)
        self.side = int(self.model.get_image_wide_positional_embeddings().shape[-1])
        gen = torch.Generator().manual_seed(1)
        c, e = dec.hidden_size, self.side
        with torch.no_grad():
            self.image_pe = self.model.get_image_wide_positional_embeddings()
        self.emb = torch.randn(1, c, e, e, generator=gen)
        if family == "sam2":
            self.features = (
                torch.randn(1, c // 8, 4 * e, 4 * e, generator=gen),
                torch.randn(1, c // 4, 2 * e, 2 * e, generator=gen),
            )
        else:
            vit_dim = dec.compress_vit_conv1.in_channels
            self.features = (torch.randn(1, e, e, vit_dim, generator=gen),)

    def prompts(self, kind: str, seed: int = 2):
        """Prompt encoder output for BATCH prompts of one kind."""
        return make_prompts(self, kind, BATCH, seed)

    def reference(self, sparse, dense, multimask: bool, hq_token_only: bool):
        """The family's straightforward decoder: (masks (B, M, L, L), iou (B, M))."""
        dec = self.model.mask_decoder
        c = dec.hidden_size
        if sparse is None:
            sparse = torch.zeros(BATCH, 1, 0, c)
        dense = dense.expand(BATCH, -1, -1, -1)
        with torch.no_grad():
            if self.family == "sam2":
                s0, s1 = self.features
                masks, iou, _, _ = dec(
                    image_embeddings=self.emb.expand(BATCH, -1, -1, -1),
                    image_positional_embeddings=self.image_pe.expand(BATCH, -1, -1, -1),
                    sparse_prompt_embeddings=sparse,
                    dense_prompt_embeddings=dense,
                    multimask_output=multimask,
                    high_resolution_features=[
                        s0.expand(BATCH, -1, -1, -1),
                        s1.expand(BATCH, -1, -1, -1),
                    ],
                )
                return masks[:, 0], iou[:, 0]
            return hq_mask_decoder(
                dec,
                image_embeddings=self.emb,
                image_pe=self.image_pe,
                sparse=sparse,
                dense=dense,
                vit_features=self.features[0],
                multimask_output=multimask,
                hq_token_only=hq_token_only,
            )

    def fast(self, sparse, dense, multimask: bool, hq_token_only: bool, absorb, shared: bool):
        fast = FastMaskDecoder(self.model.mask_decoder, absorb=absorb, hq_token_only=hq_token_only)
        with torch.no_grad():
            extras = fast.prepare_features(self.emb, self.features)
            prepared = None
            if shared:
                dense = dense[:1]
                prepared = fast.prepare(self.emb, self.image_pe, dense)
            return fast(
                self.emb,
                self.image_pe,
                None if sparse is None else sparse[:, 0],
                dense,
                multimask,
                shared=prepared,
                upscale_chunk=3,  # not a divisor of the batch: chunk edges are exercised
                extras=extras,
            )


@pytest.fixture(scope="module")
def cases() -> dict:
    return {}


def _case(cases: dict, family: str, full: bool) -> Case:
    key = (family, full)
    if key not in cases:
        cases[key] = Case(family, full)
    return cases[key]


def check(
    case: Case, kind: str, multimask: bool, absorb, tag: str, hq_token_only: bool = False
):
    sparse, dense = case.prompts(kind)
    ref_masks, ref_iou = case.reference(sparse, dense, multimask, hq_token_only)
    masks, iou = case.fast(
        sparse, dense, multimask, hq_token_only, absorb, shared=kind not in ("box+mask", "mask")
    )
    assert_parity(masks, iou, ref_masks, ref_iou, tag)


@pytest.mark.parametrize("absorb", [None, True, False])
@pytest.mark.parametrize("multimask", [True, False])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("family", ["sam2", "sam_hq"])
def test_tiny_decoder_parity(cases, family, kind, multimask, absorb):
    check(_case(cases, family, False), kind, multimask, absorb, f"{family}/tiny")


@pytest.mark.parametrize("multimask", [True, False])
@pytest.mark.parametrize("kind", ["point", "box", "mask"])
def test_tiny_hq_token_only(cases, kind, multimask):
    check(_case(cases, "sam_hq", False), kind, multimask, None, "sam_hq/tiny/hq-only", True)


@pytest.mark.parametrize("multimask", [True, False])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("family", ["sam2", "sam_hq"])
def test_full_size_decoder_parity(cases, family, kind, multimask):
    check(_case(cases, family, True), kind, multimask, None, f"{family}/full")


def test_sam2_single_output_falls_back_like_sam2(cases):
    """Both branches of SAM 2's dynamic single-mask choice, on crafted decoder outputs."""
    fast = FastMaskDecoder(_case(cases, "sam2", False).model.mask_decoder)
    dec = fast.decoder
    side = 16
    masks = torch.full((2, 4, side, side), -5.0)
    masks[:, 1:, :4, :4] = 5.0  # crisp multimask outputs
    masks[0, 0, :8, :8] = 5.0  # prompt 0: crisp single mask -> kept
    masks[1, 0] = torch.linspace(-1, 1, side * side).view(side, side)  # unstable -> fallback
    iou = torch.tensor([[0.1, 0.2, 0.9, 0.3], [0.1, 0.2, 0.3, 0.9]])
    out, out_iou = fast.head.stable_single(dec, masks, iou)
    ref, ref_iou = dec._dynamic_multimask_via_stability(masks[:, None], iou[:, None])
    assert torch.equal(out, ref[:, 0]) and torch.equal(out_iou, ref_iou[:, 0])
    assert torch.equal(out[0, 0], masks[0, 0]) and out_iou[0, 0] == 0.1
    assert torch.equal(out[1, 0], masks[1, 3]) and out_iou[1, 0] == 0.9


@pytest.mark.parametrize("family", ["sam2", "sam_hq"])
def test_family_detected(cases, family):
    fast = FastMaskDecoder(_case(cases, family, False).model.mask_decoder)
    assert fast.family == family
