"""SysCV's reference HQ-SAM (``segment_anything_hq``) built to match a transformers
``SamHQModel``, with a strict key map (every weight copied, ``load_state_dict(strict=True)``).

The SAM part of the map is ``reference.hf_to_meta_key`` (HQ-SAM's modules are SAM's); the HQ
decoder additions are mapped by ``_HQ_RULES``.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from .reference import hf_to_meta_key, vit_kwargs

__all__ = ["build_meta_sam_hq", "hq_hf_to_meta_key", "meta_sam_hq_from_hf"]

# transformers SamHQMaskDecoder additions -> SysCV MaskDecoderHQ (Sequential index 2 = GELU)
_HQ_RULES: list[tuple[str, str]] = [
    (r"^mask_decoder\.hq_token\.", "mask_decoder.hf_token."),
    (r"^mask_decoder\.hq_mask_mlp\.proj_in\.", "mask_decoder.hf_mlp.layers.0."),
    (r"^mask_decoder\.hq_mask_mlp\.layers\.0\.", "mask_decoder.hf_mlp.layers.1."),
    (r"^mask_decoder\.hq_mask_mlp\.proj_out\.", "mask_decoder.hf_mlp.layers.2."),
    (r"^mask_decoder\.compress_vit_conv1\.", "mask_decoder.compress_vit_feat.0."),
    (r"^mask_decoder\.compress_vit_norm\.", "mask_decoder.compress_vit_feat.1."),
    (r"^mask_decoder\.compress_vit_conv2\.", "mask_decoder.compress_vit_feat.3."),
    (r"^mask_decoder\.encoder_conv1\.", "mask_decoder.embedding_encoder.0."),
    (r"^mask_decoder\.encoder_norm\.", "mask_decoder.embedding_encoder.1."),
    (r"^mask_decoder\.encoder_conv2\.", "mask_decoder.embedding_encoder.3."),
    (r"^mask_decoder\.mask_conv1\.", "mask_decoder.embedding_maskfeature.0."),
    (r"^mask_decoder\.mask_norm\.", "mask_decoder.embedding_maskfeature.1."),
    (r"^mask_decoder\.mask_conv2\.", "mask_decoder.embedding_maskfeature.3."),
]


def hq_hf_to_meta_key(key: str, config) -> str:
    """One transformers ``SamHQModel`` key -> SysCV ``Sam`` (HQ) key (KeyError if unknown)."""
    for pattern, replacement in _HQ_RULES:
        new, count = re.subn(pattern, replacement, key)
        if count:
            return new
    return hf_to_meta_key(key, config)


def build_meta_sam_hq(config) -> nn.Module:
    """SysCV's HQ ``Sam`` with the sizes of a ``SamHQConfig`` (decoder LayerNorm eps aligned
    to transformers', as in ``reference.build_meta_sam``)."""
    from segment_anything_hq.modeling import (
        ImageEncoderViT,
        MaskDecoderHQ,
        PromptEncoder,
        Sam,
        TwoWayTransformer,
    )

    vc, pc, dc = config.vision_config, config.prompt_encoder_config, config.mask_decoder_config
    side = vc.image_size // vc.patch_size
    image_encoder = ImageEncoderViT(**vit_kwargs(vc))
    prompt_encoder = PromptEncoder(
        embed_dim=pc.hidden_size,
        image_embedding_size=(side, side),
        input_image_size=(vc.image_size, vc.image_size),
        mask_in_chans=pc.mask_input_channels,
    )
    mask_decoder = MaskDecoderHQ(
        transformer_dim=dc.hidden_size,
        transformer=TwoWayTransformer(
            depth=dc.num_hidden_layers,
            embedding_dim=dc.hidden_size,
            num_heads=dc.num_attention_heads,
            mlp_dim=dc.mlp_dim,
            attention_downsample_rate=dc.attention_downsample_rate,
        ),
        num_multimask_outputs=dc.num_multimask_outputs,
        iou_head_depth=dc.iou_head_depth,
        iou_head_hidden_dim=dc.iou_head_hidden_dim,
        vit_dim=dc.vit_dim,
    )
    for block in mask_decoder.transformer.layers:
        for norm in (block.norm1, block.norm2, block.norm3, block.norm4):
            norm.eps = dc.layer_norm_eps
    return Sam(
        image_encoder=image_encoder,
        prompt_encoder=prompt_encoder,
        mask_decoder=mask_decoder,
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    ).eval()


def meta_sam_hq_from_hf(model) -> nn.Module:
    """SysCV's HQ ``Sam`` carrying exactly the weights of a transformers ``SamHQModel``."""
    sam = build_meta_sam_hq(model.config)
    out: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        meta_key = hq_hf_to_meta_key(key, model.config)
        value = value.detach().to("cpu", torch.float32).clone()
        if meta_key in out:
            if not torch.equal(out[meta_key], value):
                raise KeyError(f"{key!r} maps onto {meta_key!r}, already set differently")
            continue
        out[meta_key] = value
    sam.load_state_dict(out, strict=True)
    return sam.eval()
