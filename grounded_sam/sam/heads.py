"""How each SAM family's mask decoder differs from SAM's around the shared two-way transformer.

:class:`~grounded_sam.sam.fast_decoder.FastMaskDecoder` runs SAM's two-way transformer and
upscaling branch for every family; what differs is a small strategy object, one per family,
held by its registry record (:mod:`grounded_sam.sam.families`):

* the order of the learned output tokens and where the IoU and mask tokens sit in it;
* the per-image inputs of the upscaling branch, prepared once per image
  (:meth:`DecoderHead.prepare_features`), and how they enter the branch;
* extra mask heads (HQ-SAM's HQ token) and the single-mask rule (SAM 2's dynamic fallback).

A new family whose decoder keeps SAM's two-way transformer subclasses :class:`DecoderHead`
and overrides only what differs. Heads hold no state: one instance serves every thread.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "DecoderHead",
    "HQ_HEAD",
    "HQHead",
    "SAM2_HEAD",
    "SAM_HEAD",
    "Sam2Head",
    "hq_features",
    "stable_single_mask",
]


class DecoderHead:
    """SAM's decoder head: tokens [IoU, 4 masks], no per-image upscaling inputs.

    Attributes:
        name: The family's registry name.
        iou_at: Position of the IoU token among the output tokens.
        mask_at: Position of the first mask token.
    """

    name = "sam"
    iou_at = 0
    mask_at = 1

    def output_tokens(self, decoder: torch.nn.Module) -> torch.Tensor:
        """(T0, C) learned output tokens in the family's order."""
        return torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)

    def prepare_features(
        self,
        decoder: torch.nn.Module,
        image_embeddings: torch.Tensor,
        features: tuple[torch.Tensor, ...],
    ) -> tuple[torch.Tensor, ...]:
        """The per-image inputs of the upscaling branch (computed once per image): none."""
        return ()

    def add_level(self, x: torch.Tensor, extras: tuple[torch.Tensor, ...], level: int):
        """Add the image's skip features of ``level`` to block-layout activations: none here.

        Level 1 is added after the first transposed convolution, level 0 after the second.
        """
        return x

    def dynamic_single(self, decoder: torch.nn.Module, multimask_output: bool) -> bool:
        """Whether the single-mask output falls back to the best multimask output."""
        return False

    def extra_hyper(
        self, decoder: torch.nn.Module, mask_tokens: torch.Tensor
    ) -> torch.Tensor | None:
        """(B, 1, C/8) hypernetwork output of an extra mask token, or None."""
        return None

    def finish_masks(
        self,
        decoder: torch.nn.Module,
        x: torch.Tensor,
        masks: torch.Tensor,
        hyper_extra: torch.Tensor | None,
        extras: tuple[torch.Tensor, ...],
        extra_only: bool,
    ) -> torch.Tensor:
        """The returned (b, M, 4E, 4E) masks: SAM's mask-token masks as they are.

        Args:
            decoder: The mask decoder.
            x: (b, E*E, 16, C/8) upscaled features in block layout.
            masks: (b, M, 4E, 4E) masks of the returned mask tokens.
            hyper_extra: :meth:`extra_hyper`'s output for these prompts.
            extras: :meth:`prepare_features`'s output.
            extra_only: Return only the extra token's mask (HQ-SAM's ``hq_token_only``).
        """
        return masks

    def stable_single(
        self, decoder: torch.nn.Module, masks: torch.Tensor, iou: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The single mask of (B, 4, L, L) candidates (only when :meth:`dynamic_single`)."""
        raise NotImplementedError(f"{self.name} has no dynamic single-mask output")


class Sam2Head(DecoderHead):
    """SAM 2's head: tokens [object score, IoU, 4 masks], backbone levels in the upscaling.

    Its single-mask output falls back to the best multimask output when unstable (eval mode).
    """

    name = "sam2"
    iou_at = 1
    mask_at = 2

    def output_tokens(self, decoder: torch.nn.Module) -> torch.Tensor:
        """[object score, IoU, 4 masks]."""
        parts = [decoder.obj_score_token.weight, decoder.iou_token.weight]
        return torch.cat([*parts, decoder.mask_tokens.weight], dim=0)

    def prepare_features(self, decoder, image_embeddings, features):
        """The two levels in the upscaling branch's 2x2 block layout.

        ((1, C/8, 4E, 4E), (1, C/4, 2E, 2E)) -> (level 0 as (1, E*E, 16, C/8), level 1 as
        (1, E*E, 4, C/4)).
        """
        e = image_embeddings.shape[-1]
        s0, s1 = features
        c8, c4 = s0.shape[1], s1.shape[1]
        # (o, 4E, 4E) -> (i, j, (a, c, a2, c2), o): row 4i + 2a + a2, col 4j + 2c + c2
        b0 = s0[0].reshape(c8, e, 2, 2, e, 2, 2).permute(1, 4, 2, 5, 3, 6, 0)
        b1 = s1[0].reshape(c4, e, 2, e, 2).permute(1, 3, 2, 4, 0)  # (i, j, a, c, o)
        return (
            b0.reshape(1, e * e, 16, c8).contiguous(),
            b1.reshape(1, e * e, 4, c4).contiguous(),
        )

    def add_level(self, x, extras, level):
        """``x`` + the level (shared by all prompts)."""
        return x + extras[level]

    def dynamic_single(self, decoder, multimask_output):
        """Single-mask output in eval mode (``dynamic_multimask_via_stability``)."""
        return not multimask_output and bool(
            getattr(decoder, "dynamic_multimask_via_stability", False)
        )

    def stable_single(
        self, decoder: torch.nn.Module, masks: torch.Tensor, iou: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """SAM 2's dynamic single-mask output with the decoder's delta and threshold."""
        return stable_single_mask(
            masks,
            iou,
            decoder.dynamic_multimask_stability_delta,
            decoder.dynamic_multimask_stability_thresh,
        )


class HQHead(DecoderHead):
    """HQ-SAM's head: tokens [IoU, 4 masks, HQ], and the HQ mask added to SAM's.

    The HQ mask runs two 3x3 convolutions over every prompt's upscaled features plus the
    image's fused early-ViT features.
    """

    name = "sam_hq"

    def output_tokens(self, decoder: torch.nn.Module) -> torch.Tensor:
        """[IoU, 4 masks, HQ]."""
        parts = [decoder.iou_token.weight, decoder.mask_tokens.weight, decoder.hq_token.weight]
        return torch.cat(parts, dim=0)

    def prepare_features(self, decoder, image_embeddings, features):
        """Early ViT features ((1, E, E, D),) -> ((1, 4E, 4E, C/8) fused, channels last,)."""
        hq = hq_features(decoder, image_embeddings, features[0])
        return (hq.permute(0, 2, 3, 1).contiguous(),)

    def extra_hyper(self, decoder, mask_tokens):
        """The HQ token's hypernetwork output."""
        hq_at = len(decoder.output_hypernetworks_mlps)
        return decoder.hq_mask_mlp(mask_tokens[:, hq_at])[:, None]  # (B, 1, C/8)

    def finish_masks(self, decoder, x, masks, hyper_extra, extras, extra_only):
        """SAM's masks + the HQ mask (``extra_only``: the HQ mask alone, for each output)."""
        # 3x3 convolutions on the upscaled features need the image layout; kept channels-last
        # throughout (the CPU convolutions' native layout, and LayerNorm over channels
        # without transposes)
        b, c8, m, e = x.shape[0], x.shape[-1], masks.shape[1], masks.shape[-1] // 4
        act, norm = decoder.activation, decoder.mask_norm
        up = x.view(b, e, e, 2, 2, 2, 2, c8).permute(0, 1, 3, 5, 2, 4, 6, 7)
        up = up.reshape(b, 4 * e, 4 * e, c8)  # (b, 4E, 4E, C/8): row 4i + 2a + a2
        h = decoder.mask_conv1(up.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        h = act(F.layer_norm(h, (h.shape[-1],), norm.weight, norm.bias, norm.eps))
        h = decoder.mask_conv2(h.permute(0, 3, 1, 2)).permute(0, 2, 3, 1) + extras[0]
        hq = (h.reshape(b, -1, c8) @ hyper_extra.transpose(1, 2)).view(b, 1, 4 * e, 4 * e)
        if extra_only:
            return hq.expand(-1, m, -1, -1)
        return masks + hq


SAM_HEAD = DecoderHead()
SAM2_HEAD = Sam2Head()
HQ_HEAD = HQHead()


def hq_features(
    decoder: torch.nn.Module, image_embeddings: torch.Tensor, vit_features: torch.Tensor
) -> torch.Tensor:
    """HQ-SAM's fused features: the embedding upscaled plus the early ViT features compressed.

    Args:
        decoder: ``SamHQMaskDecoder``.
        image_embeddings: (1, C, E, E) image embedding.
        vit_features: (1, E, E, D) early ViT features (channels last).

    Returns:
        (1, C/8, 4E, 4E), added to the HQ token's upscaled mask features.
    """
    act = decoder.activation
    vit = vit_features.permute(0, 3, 1, 2)
    return decoder.encoder_conv2(
        act(decoder.encoder_norm(decoder.encoder_conv1(image_embeddings)))
    ) + decoder.compress_vit_conv2(
        act(decoder.compress_vit_norm(decoder.compress_vit_conv1(vit)))
    )


def stable_single_mask(
    masks: torch.Tensor, iou: torch.Tensor, delta: float, thresh: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """SAM 2's dynamic single-mask output (as ``Sam2MaskDecoder`` in eval mode).

    Written with ``gather`` / ``where`` only, so the ONNX export traces this same code.

    Args:
        masks: (B, 4, L, L) logits of mask tokens 0..3.
        iou: (B, 4) their predicted IoUs.
        delta: Logit offset of the stability score.
        thresh: Token 0's mask is kept when its stability score reaches this.

    Returns:
        ``(masks (B, 1, L, L), iou (B, 1))``: token 0's mask where its stability score (IoU
        of the masks at logit > +delta and > -delta; 1 when the latter is empty) reaches
        ``thresh``, else the multimask output (1-3) with the highest predicted IoU.
    """
    flat = masks[:, 0].flatten(1)
    # counted in float32 (exact to 2^24 pixels; ONNX has no sum over booleans)
    area_i = (flat > delta).float().sum(-1)
    area_u = (flat > -delta).float().sum(-1)
    stability = torch.where(area_u > 0, area_i / area_u.clamp_min(1), 1.0)
    best = iou[:, 1:].argmax(1, keepdim=True) + 1  # (B, 1)
    pick = torch.where(stability[:, None] >= thresh, torch.zeros_like(best), best)
    index = pick[:, :, None, None].expand(-1, -1, masks.shape[-2], masks.shape[-1])
    return masks.gather(1, index), iou.gather(1, pick)
