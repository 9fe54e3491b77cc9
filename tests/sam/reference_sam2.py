"""Meta's reference SAM 2.1 (``sam2`` package) built to match a transformers ``Sam2Model``.

Meta's model is built by its own hydra config (``sam2.1_hiera_t.yaml``) with the tiny sizes
overridden, and gets the transformers weights through an explicit key map. Every transformers
weight must map (KeyError otherwise) and every Meta weight of the image path must be set; the
only Meta weights left unset are the video-memory modules, which the image predictor and the
automatic mask generator never run (checked by name).
"""

from __future__ import annotations

import re

import torch
from torch import nn

__all__ = ["build_meta_sam2", "hf_to_meta_sam2_key", "meta_sam2_from_hf"]

# Video-only parts of SAM2Base (memory attention / encoder, object pointers, temporal codes).
VIDEO_ONLY = re.compile(
    r"^(memory_attention|memory_encoder|mask_downsample|obj_ptr_proj|obj_ptr_tpos_proj|"
    r"maskmem_tpos_enc|no_mem_pos_enc|no_obj_ptr|no_obj_embed_spatial)"
)

_PE_KEYS = (
    "shared_image_embedding.positional_embedding",
    "prompt_encoder.shared_embedding.positional_embedding",
)

_RULES: list[tuple[str, str]] = [
    (r"^no_memory_embedding$", "no_mem_embed"),
    (
        r"^vision_encoder\.backbone\.patch_embed\.projection\.",
        "image_encoder.trunk.patch_embed.proj.",
    ),
    (r"^vision_encoder\.backbone\.(pos_embed|pos_embed_window)$", r"image_encoder.trunk.\1"),
    (
        r"^vision_encoder\.backbone\.blocks\.(\d+)\.layer_norm(\d)\.",
        r"image_encoder.trunk.blocks.\1.norm\2.",
    ),
    (
        r"^vision_encoder\.backbone\.blocks\.(\d+)\.mlp\.proj_in\.",
        r"image_encoder.trunk.blocks.\1.mlp.layers.0.",
    ),
    (
        r"^vision_encoder\.backbone\.blocks\.(\d+)\.mlp\.proj_out\.",
        r"image_encoder.trunk.blocks.\1.mlp.layers.1.",
    ),
    (
        r"^vision_encoder\.backbone\.blocks\.(\d+)\.(attn|proj)\b",
        r"image_encoder.trunk.blocks.\1.\2",
    ),
    (r"^vision_encoder\.neck\.convs\.(\d+)\.", r"image_encoder.neck.convs.\1.conv."),
    (r"^prompt_encoder\.mask_embed\.conv1\.", "sam_prompt_encoder.mask_downscaling.0."),
    (r"^prompt_encoder\.mask_embed\.layer_norm1\.", "sam_prompt_encoder.mask_downscaling.1."),
    (r"^prompt_encoder\.mask_embed\.conv2\.", "sam_prompt_encoder.mask_downscaling.3."),
    (r"^prompt_encoder\.mask_embed\.layer_norm2\.", "sam_prompt_encoder.mask_downscaling.4."),
    (r"^prompt_encoder\.mask_embed\.conv3\.", "sam_prompt_encoder.mask_downscaling.6."),
    (r"^prompt_encoder\.(not_a_point_embed|no_mask_embed)\.", r"sam_prompt_encoder.\1."),
    (
        r"^mask_decoder\.transformer\.layers\.(\d+)\.layer_norm(\d)\.",
        r"sam_mask_decoder.transformer.layers.\1.norm\2.",
    ),
    (
        r"^mask_decoder\.transformer\.layers\.(\d+)\.mlp\.proj_in\.",
        r"sam_mask_decoder.transformer.layers.\1.mlp.layers.0.",
    ),
    (
        r"^mask_decoder\.transformer\.layers\.(\d+)\.mlp\.proj_out\.",
        r"sam_mask_decoder.transformer.layers.\1.mlp.layers.1.",
    ),
    (
        r"^mask_decoder\.transformer\.layer_norm_final_attn\.",
        "sam_mask_decoder.transformer.norm_final_attn.",
    ),
    (r"^mask_decoder\.upscale_conv1\.", "sam_mask_decoder.output_upscaling.0."),
    (r"^mask_decoder\.upscale_layer_norm\.", "sam_mask_decoder.output_upscaling.1."),
    (r"^mask_decoder\.upscale_conv2\.", "sam_mask_decoder.output_upscaling.3."),
    (
        r"^mask_decoder\.(output_hypernetworks_mlps\.\d+|iou_prediction_head|pred_obj_score_head)"
        r"\.proj_in\.",
        r"sam_mask_decoder.\1.layers.0.",
    ),
    (
        r"^mask_decoder\.(output_hypernetworks_mlps\.\d+|iou_prediction_head|pred_obj_score_head)"
        r"\.layers\.0\.",
        r"sam_mask_decoder.\1.layers.1.",
    ),
    (
        r"^mask_decoder\.(output_hypernetworks_mlps\.\d+|iou_prediction_head|pred_obj_score_head)"
        r"\.proj_out\.",
        r"sam_mask_decoder.\1.layers.2.",
    ),
    (
        r"^mask_decoder\.(iou_token|mask_tokens|obj_score_token|conv_s0|conv_s1)\.",
        r"sam_mask_decoder.\1.",
    ),
    (r"^mask_decoder\.transformer\.", "sam_mask_decoder.transformer."),
]


def hf_to_meta_sam2_key(key: str) -> str:
    """One transformers ``Sam2Model`` key -> Meta ``SAM2Base`` key (KeyError if unknown)."""
    if key in _PE_KEYS:
        return "sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"
    for pattern, replacement in _RULES:
        new, count = re.subn(pattern, replacement, key)
        if count:
            return new.replace(".o_proj.", ".out_proj.")
    raise KeyError(f"no Meta SAM 2 equivalent known for transformers key {key!r}")


def build_meta_sam2(config) -> nn.Module:
    """Meta's ``SAM2Base`` (SAM 2.1 tiny config, sizes overridden to match ``config``)."""
    from sam2.build_sam import build_sam2

    dc = config.mask_decoder_config
    if dc.mlp_dim != 2048 or dc.num_attention_heads != 8 or dc.iou_head_hidden_dim != 256:
        raise ValueError("Meta's SAM 2 builder fixes the decoder MLP 2048, 8 heads, IoU head 256")
    overrides = [
        f"++model.image_size={config.prompt_encoder_config.image_size}",
        *image_encoder_overrides(config),
    ]
    model = build_sam2(
        "configs/sam2.1/sam2.1_hiera_t.yaml", None, device="cpu", hydra_overrides_extra=overrides
    )
    return model.eval()


def meta_sam2_from_hf(model) -> nn.Module:
    """Meta's ``SAM2Base`` carrying exactly the weights of a transformers ``Sam2Model``."""
    meta = build_meta_sam2(model.config)
    state: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        value = value.detach().to("cpu", torch.float32).clone()
        if key == "prompt_encoder.point_embed.weight":  # one (4, C) table -> four (1, C)
            for i in range(value.shape[0]):
                state[f"sam_prompt_encoder.point_embeddings.{i}.weight"] = value[i : i + 1]
            continue
        meta_key = hf_to_meta_sam2_key(key)
        if meta_key in state:
            if not torch.equal(state[meta_key], value):
                raise KeyError(f"{key!r} maps onto {meta_key!r}, already set differently")
            continue
        state[meta_key] = value
    missing, unexpected = meta.load_state_dict(state, strict=False)
    if unexpected:
        raise KeyError(f"keys unknown to Meta's SAM2Base: {unexpected[:5]}")
    not_video = [k for k in missing if not VIDEO_ONLY.match(k)]
    if not_video:
        raise KeyError(f"image-path weights of Meta's SAM2Base left unset: {not_video[:5]}")
    return meta.eval()


def image_encoder_overrides(config) -> list[str]:
    """Hydra overrides that give Meta's SAM 2 image encoder a transformers config's sizes."""
    bb = config.vision_config.backbone_config
    vc = config.vision_config
    return [
        f"++model.image_encoder.trunk.embed_dim={bb.hidden_size}",
        f"++model.image_encoder.trunk.num_heads={bb.num_attention_heads}",
        f"++model.image_encoder.trunk.stages={list(bb.blocks_per_stage)}",
        f"++model.image_encoder.trunk.global_att_blocks={list(bb.global_attention_blocks)}",
        f"++model.image_encoder.trunk.window_spec={list(bb.window_size_per_stage)}",
        "++model.image_encoder.trunk.window_pos_embed_bkg_spatial_size="
        f"{list(bb.window_positional_embedding_background_size)}",
        f"++model.image_encoder.neck.d_model={vc.fpn_hidden_size}",
        f"++model.image_encoder.neck.position_encoding.num_pos_feats={vc.fpn_hidden_size}",
        f"++model.image_encoder.neck.backbone_channel_list={list(vc.backbone_channel_list)}",
    ]
