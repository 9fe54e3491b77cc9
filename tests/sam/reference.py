"""Meta's reference SAM (``segment_anything``) built to match a transformers ``SamModel``.

The parity tests give our predictor (transformers ``SamModel`` driven by
``grounded_sam.sam.predictor``) and Meta's own ``SamPredictor`` the same weights and the same
inputs. This module builds Meta's ``Sam`` from its modeling classes with exactly the sizes of a
given ``transformers.SamConfig`` and copies the weights over with an explicit key mapping (the
inverse of transformers' ``convert_sam_to_hf`` mapping), loaded with ``strict=True`` so that no
weight is silently left at its random initialisation.

Only Meta's public modeling classes are used here; nothing of it is copied into the package.
"""

from __future__ import annotations

import re
from functools import partial

import torch
from torch import nn

__all__ = ["build_meta_sam", "hf_to_meta_key", "convert_state_dict", "meta_sam_from_hf"]

# The prompt encoder's random Fourier matrix exists twice in a transformers SamModel (tied):
# once for the image-wide positional encoding, once inside the prompt encoder. Meta has one.
_PE_KEYS = (
    "shared_image_embedding.positional_embedding",
    "prompt_encoder.shared_embedding.positional_embedding",
)
_META_PE_KEY = "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"


def vit_kwargs(vc) -> dict:
    """Meta's ``ImageEncoderViT`` arguments for a transformers SAM vision config (SAM and
    HQ-SAM share the encoder)."""
    return dict(
        img_size=vc.image_size,
        patch_size=vc.patch_size,
        in_chans=vc.num_channels,
        embed_dim=vc.hidden_size,
        depth=vc.num_hidden_layers,
        num_heads=vc.num_attention_heads,
        mlp_ratio=vc.mlp_dim / vc.hidden_size,
        out_chans=vc.output_channels,
        qkv_bias=vc.qkv_bias,
        norm_layer=partial(nn.LayerNorm, eps=vc.layer_norm_eps),
        act_layer=nn.GELU,
        use_abs_pos=vc.use_abs_pos,
        use_rel_pos=vc.use_rel_pos,
        window_size=vc.window_size,
        global_attn_indexes=tuple(vc.global_attn_indexes),
    )


def build_meta_sam(config, match_layer_norm_eps: bool = True) -> nn.Module:
    """Build Meta's ``Sam`` with the architecture described by a transformers ``SamConfig``.

    The one architectural difference between the two implementations: Meta's two-way
    transformer blocks use ``nn.LayerNorm``'s default eps (1e-5) for ``norm1..norm4``, while
    transformers uses ``mask_decoder_config.layer_norm_eps`` (1e-6) for ``layer_norm1..4``.
    With ``match_layer_norm_eps`` the Meta model takes the transformers value, so that the
    remaining differences are float32 operation order only; without it the model is exactly
    what Meta ships (logits then differ by ~1e-4 on the tiny model).

    Args:
        config: ``transformers.SamConfig`` (vision / prompt encoder / mask decoder sub-configs).
        match_layer_norm_eps: Use the transformers eps in the decoder blocks' LayerNorms.

    Returns:
        ``segment_anything.modeling.Sam`` in eval mode with random weights.
    """
    from segment_anything.modeling import (
        ImageEncoderViT,
        MaskDecoder,
        PromptEncoder,
        Sam,
        TwoWayTransformer,
    )

    vc = config.vision_config
    pc = config.prompt_encoder_config
    dc = config.mask_decoder_config
    if vc.hidden_act != "gelu" or pc.hidden_act != "gelu" or dc.hidden_act != "relu":
        raise ValueError("Meta's SAM uses GELU in the encoders and ReLU in the decoder MLPs.")
    if vc.output_channels != pc.hidden_size or pc.hidden_size != dc.hidden_size:
        raise ValueError("Meta's SAM needs one prompt width for the neck, prompts and decoder.")
    if vc.num_pos_feats != pc.hidden_size // 2:
        raise ValueError("Meta's SAM uses hidden_size // 2 random Fourier features.")
    embedding_side = vc.image_size // vc.patch_size
    if pc.image_embedding_size != embedding_side or pc.image_size != vc.image_size:
        raise ValueError("prompt encoder and vision encoder disagree on the frame geometry.")

    image_encoder = ImageEncoderViT(**vit_kwargs(vc))
    if image_encoder.blocks[0].mlp.lin1.out_features != vc.mlp_dim:
        raise ValueError(f"vision mlp_dim {vc.mlp_dim} is not a whole ratio of the width.")
    prompt_encoder = PromptEncoder(
        embed_dim=pc.hidden_size,
        image_embedding_size=(embedding_side, embedding_side),
        input_image_size=(vc.image_size, vc.image_size),
        mask_in_chans=pc.mask_input_channels,
        activation=nn.GELU,
    )
    mask_decoder = MaskDecoder(
        transformer_dim=dc.hidden_size,
        transformer=TwoWayTransformer(
            depth=dc.num_hidden_layers,
            embedding_dim=dc.hidden_size,
            num_heads=dc.num_attention_heads,
            mlp_dim=dc.mlp_dim,
            activation=nn.ReLU,
            attention_downsample_rate=dc.attention_downsample_rate,
        ),
        num_multimask_outputs=dc.num_multimask_outputs,
        activation=nn.GELU,
        iou_head_depth=dc.iou_head_depth,
        iou_head_hidden_dim=dc.iou_head_hidden_dim,
    )
    if match_layer_norm_eps:
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


def _feed_forward(prefix: str, rest: str, depth: int) -> str:
    """transformers ``SamFeedForward`` (proj_in / layers.i / proj_out) -> Meta ``MLP.layers.j``."""
    if rest.startswith("proj_in."):
        return f"{prefix}.layers.0.{rest[len('proj_in.') :]}"
    if rest.startswith("proj_out."):
        return f"{prefix}.layers.{depth - 1}.{rest[len('proj_out.') :]}"
    m = re.fullmatch(r"layers\.(\d+)\.(.+)", rest)
    if m is None:
        raise KeyError(f"unexpected feed-forward key {prefix}.{rest}")
    return f"{prefix}.layers.{int(m.group(1)) + 1}.{m.group(2)}"


# (pattern, replacement) applied in order, each at most once, to the transformers key.
_RULES: list[tuple[str, str]] = [
    # image encoder
    (r"^vision_encoder\.patch_embed\.projection\.", "image_encoder.patch_embed.proj."),
    (r"^vision_encoder\.pos_embed$", "image_encoder.pos_embed"),
    (r"^vision_encoder\.layers\.(\d+)\.layer_norm(\d)\.", r"image_encoder.blocks.\1.norm\2."),
    (r"^vision_encoder\.layers\.(\d+)\.attn\.", r"image_encoder.blocks.\1.attn."),
    (r"^vision_encoder\.layers\.(\d+)\.mlp\.", r"image_encoder.blocks.\1.mlp."),
    (r"^vision_encoder\.neck\.conv1\.", "image_encoder.neck.0."),
    (r"^vision_encoder\.neck\.layer_norm1\.", "image_encoder.neck.1."),
    (r"^vision_encoder\.neck\.conv2\.", "image_encoder.neck.2."),
    (r"^vision_encoder\.neck\.layer_norm2\.", "image_encoder.neck.3."),
    # prompt encoder (Sequential indices 2 and 5 are the GELUs)
    (r"^prompt_encoder\.mask_embed\.conv1\.", "prompt_encoder.mask_downscaling.0."),
    (r"^prompt_encoder\.mask_embed\.layer_norm1\.", "prompt_encoder.mask_downscaling.1."),
    (r"^prompt_encoder\.mask_embed\.conv2\.", "prompt_encoder.mask_downscaling.3."),
    (r"^prompt_encoder\.mask_embed\.layer_norm2\.", "prompt_encoder.mask_downscaling.4."),
    (r"^prompt_encoder\.mask_embed\.conv3\.", "prompt_encoder.mask_downscaling.6."),
    (r"^prompt_encoder\.point_embed\.(\d+)\.", r"prompt_encoder.point_embeddings.\1."),
    (r"^prompt_encoder\.(not_a_point_embed|no_mask_embed)\.", r"prompt_encoder.\1."),
    # mask decoder: two-way transformer
    (
        r"^mask_decoder\.transformer\.layers\.(\d+)\.layer_norm(\d)\.",
        r"mask_decoder.transformer.layers.\1.norm\2.",
    ),
    (
        r"^mask_decoder\.transformer\.layers\.(\d+)\."
        r"(self_attn|cross_attn_token_to_image|cross_attn_image_to_token|mlp)\.",
        r"mask_decoder.transformer.layers.\1.\2.",
    ),
    (
        r"^mask_decoder\.transformer\.final_attn_token_to_image\.",
        "mask_decoder.transformer.final_attn_token_to_image.",
    ),
    (
        r"^mask_decoder\.transformer\.layer_norm_final_attn\.",
        "mask_decoder.transformer.norm_final_attn.",
    ),
    # mask decoder: tokens and output upscaling (Sequential indices 2 and 4 are the GELUs)
    (r"^mask_decoder\.(iou_token|mask_tokens)\.", r"mask_decoder.\1."),
    (r"^mask_decoder\.upscale_conv1\.", "mask_decoder.output_upscaling.0."),
    (r"^mask_decoder\.upscale_layer_norm\.", "mask_decoder.output_upscaling.1."),
    (r"^mask_decoder\.upscale_conv2\.", "mask_decoder.output_upscaling.3."),
]


def hf_to_meta_key(key: str, config) -> str:
    """Map one transformers ``SamModel`` state-dict key to Meta's ``Sam`` key.

    Args:
        key: e.g. ``"vision_encoder.layers.0.layer_norm1.weight"``.
        config: The model's ``transformers.SamConfig`` (for the MLP depths).

    Returns:
        e.g. ``"image_encoder.blocks.0.norm1.weight"``.

    Raises:
        KeyError: The key is not part of the known SAM architecture.
    """
    if key in _PE_KEYS:
        return _META_PE_KEY
    m = re.fullmatch(r"(mask_decoder\.output_hypernetworks_mlps\.\d+)\.(.+)", key)
    if m is not None:
        return _feed_forward(m.group(1), m.group(2), depth=3)
    m = re.fullmatch(r"(mask_decoder\.iou_prediction_head)\.(.+)", key)
    if m is not None:
        return _feed_forward(m.group(1), m.group(2), config.mask_decoder_config.iou_head_depth)
    for pattern, replacement in _RULES:
        new, count = re.subn(pattern, replacement, key)
        if count:
            return new
    raise KeyError(f"no Meta SAM equivalent known for transformers key {key!r}")


def convert_state_dict(hf_state: dict[str, torch.Tensor], config) -> dict[str, torch.Tensor]:
    """Convert a transformers ``SamModel`` state dict to Meta's ``Sam`` layout.

    Args:
        hf_state: ``SamModel.state_dict()``.
        config: The model's ``transformers.SamConfig``.

    Returns:
        A state dict for ``build_meta_sam(config).load_state_dict(..., strict=True)``.

    Raises:
        KeyError: Unknown key, or two transformers keys mapping to one Meta key with different
            values (the tied positional matrix must be identical in both places).
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in hf_state.items():
        meta_key = hf_to_meta_key(key, config)
        value = value.detach().to("cpu", torch.float32).clone()
        if meta_key in out:
            if meta_key != _META_PE_KEY or not torch.equal(out[meta_key], value):
                raise KeyError(f"{key!r} maps onto {meta_key!r}, which is already set differently")
            continue
        out[meta_key] = value
    return out


def meta_sam_from_hf(model, match_layer_norm_eps: bool = True) -> nn.Module:
    """Meta's ``Sam`` carrying exactly the weights of a transformers ``SamModel``.

    Args:
        model: ``transformers.SamModel`` (any device / dtype; weights are copied as float32).
        match_layer_norm_eps: See :func:`build_meta_sam`.

    Returns:
        Meta ``Sam`` in eval mode on the CPU, float32.
    """
    sam = build_meta_sam(model.config, match_layer_norm_eps=match_layer_norm_eps)
    state = convert_state_dict(model.state_dict(), model.config)
    sam.load_state_dict(state, strict=True)
    return sam.eval()
