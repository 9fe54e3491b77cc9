"""HQ-SAM (transformers ``SamHQModel``) behind the SAM predictor interface.

HQ-SAM is SAM plus a high-quality output token whose mask is computed from the decoder's
upscaled features fused with early ViT features. The kept embedding therefore holds, besides
the image embedding, the first global-attention block's ViT output (``features[0]``,
(1, E, E, vit_dim)), which :meth:`SamHQPredictor.decode` feeds back to the decoder.

With ``multimask_output`` the three SAM masks are returned in token order (whole / part /
sub-part, as for SAM), each plus the HQ mask unless ``hq_token_only``; SysCV's HQ predictor
returns only the one with the highest predicted IoU of them.

Prompts are decoded by the many-prompt :class:`~grounded_sam.sam.fast_decoder.FastMaskDecoder`
(HQ-SAM's two-way transformer is SAM's: layer 0's image side is shared, projections absorbed,
the upscaling run as matrix products). What it cannot share is HQ-SAM's own branch: two 3x3
convolutions over every prompt's (C/8, 4E, 4E) upscaled features, which are per prompt by
construction. :func:`hq_mask_decoder` is the straightforward reference of the same function
(SysCV's data flow), kept for tests and export.
"""

from __future__ import annotations

import logging

import torch

from grounded_sam.sam.heads import hq_features
from grounded_sam.sam.predictor import SamPredictor

__all__ = ["SamHQPredictor"]

logger = logging.getLogger(__name__)


class SamHQPredictor(SamPredictor):
    """A transformers ``SamHQModel`` driven like Meta's HQ-SAM predictor.

    Args:
        model: ``transformers.SamHQModel`` (on its device and dtype, in eval mode).
        hq_token_only: Return only the HQ token's mask instead of SAM's mask + the HQ mask
            (Meta's default is False).
        compile: ``torch.compile`` the image encoder and the mask decoder (see
            :class:`~grounded_sam.sam.predictor.SamPredictor`).
    """

    FAMILY = "sam_hq"

    def __init__(
        self, model, hq_token_only: bool = False, compile: bool | str = False
    ) -> None:
        super().__init__(model, compile=compile)
        self.hq_token_only = hq_token_only

    @property
    def hq_token_only(self) -> bool:
        """Return only the HQ token's mask (instead of SAM's mask + the HQ mask)."""
        return self._fast.hq_token_only

    @hq_token_only.setter
    def hq_token_only(self, value: bool) -> None:
        self._fast.hq_token_only = bool(value)

    def _image_encoder(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, S, S) pixels -> (embedding (B, C, E, E), early ViT features (B, E, E, D))."""
        out = self.model.vision_encoder(pixels)
        return out.last_hidden_state, out.intermediate_embeddings[0]

    def _encoder_outputs(self, out) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """``features`` = (early ViT features (B, E, E, vit_dim),)."""
        embeddings, vit_features = out
        return embeddings, (vit_features,)

    def _feature_shapes(self, side: int) -> tuple[tuple[int, ...], ...]:
        """The early ViT features: (1, E, E, ViT width)."""
        return ((1, side, side, int(self.model.config.vision_config.hidden_size)),)


def hq_mask_decoder(
    decoder,
    *,
    image_embeddings: torch.Tensor,
    image_pe: torch.Tensor,
    sparse: torch.Tensor,
    dense: torch.Tensor,
    vit_features: torch.Tensor,
    multimask_output: bool,
    hq_token_only: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """HQ-SAM's mask decoder with SysCV's data flow, on a transformers ``SamHQMaskDecoder``.

    transformers' own ``SamHQMaskDecoder.forward`` (5.x) upsamples the image embedding as it
    was BEFORE the two-way transformer (its updated keys are discarded) and with height and
    width swapped, so its masks do not match SysCV's HQ-SAM on the same weights (measured:
    logits off by ~60 on a tiny model while the IoUs agree). This function runs the same
    modules in the reference's order: the transformer's updated image tokens are upsampled.

    Args:
        decoder: ``SamHQMaskDecoder`` (its weights are used, its forward is not).
        image_embeddings: (1, C, E, E) image embedding.
        image_pe: (1, C, E, E) image-wide positional encoding.
        sparse: (B, 1, N, C) point/box tokens (N may be 0).
        dense: (B, C, E, E) mask-prompt (or no-mask) embedding.
        vit_features: (1, E, E, D) early ViT features.
        multimask_output: Three SAM masks (tokens 1-3) instead of one (token 0).
        hq_token_only: Only the HQ mask instead of SAM's mask + the HQ mask.

    Returns:
        ``(logits (B, K, 4E, 4E), iou (B, K))`` with K = 3 or 1, in token order.
    """
    act = decoder.activation
    batch = sparse.shape[0]
    fused = hq_features(decoder, image_embeddings, vit_features)
    output_tokens = torch.cat(
        [decoder.iou_token.weight, decoder.mask_tokens.weight, decoder.hq_token.weight], dim=0
    )
    tokens = torch.cat([output_tokens.expand(batch, 1, -1, -1), sparse.to(output_tokens.dtype)], 2)
    src = image_embeddings + dense
    _, channels, height, width = src.shape
    queries, keys = decoder.transformer(
        point_embeddings=tokens,
        image_embeddings=src,
        image_positional_embeddings=image_pe.expand(batch, -1, -1, -1),
        attention_similarity=None,
    )
    n_tokens = decoder.num_mask_tokens  # SAM's 4 + the HQ token
    iou_out = queries[:, 0, 0]
    mask_out = queries[:, 0, 1 : 1 + n_tokens]
    src = keys[:, 0].transpose(1, 2).reshape(batch, channels, height, width)
    upscaled = act(
        decoder.upscale_conv2(act(decoder.upscale_layer_norm(decoder.upscale_conv1(src))))
    )
    upscaled_hq = (
        decoder.mask_conv2(act(decoder.mask_norm(decoder.mask_conv1(upscaled)))) + fused
    )
    hyper = torch.stack(
        [decoder.output_hypernetworks_mlps[i](mask_out[:, i]) for i in range(n_tokens - 1)]
        + [decoder.hq_mask_mlp(mask_out[:, n_tokens - 1])],
        dim=1,
    )  # (B, 5, C/8)
    b, c, h, w = upscaled.shape
    masks_sam = (hyper[:, : n_tokens - 1] @ upscaled.reshape(b, c, h * w)).reshape(b, -1, h, w)
    masks_hq = (hyper[:, n_tokens - 1 :] @ upscaled_hq.reshape(b, c, h * w)).reshape(b, 1, h, w)
    iou = decoder.iou_prediction_head(iou_out)
    chosen = slice(1, n_tokens - 1) if multimask_output else slice(0, 1)
    masks = masks_hq.expand(-1, chosen.stop - chosen.start, -1, -1)
    if not hq_token_only:
        masks = masks_sam[:, chosen] + masks_hq
    return masks, iou[:, chosen]
