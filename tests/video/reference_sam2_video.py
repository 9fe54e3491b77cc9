"""Meta's ``SAM2VideoPredictor`` (``sam2`` package) carrying a transformers ``Sam2VideoModel``'s
weights, for the propagation parity test.

Meta's model is built by its hydra config (``sam2.1_hiera_t.yaml``) with the image and memory
sizes overridden to the tiny ones, ``fill_hole_area=0`` (its hole filling needs the CUDA
extension), and gets the transformers weights through an explicit key map: the image path by
``tests/sam/reference_sam2.py``, the memory attention / memory encoder / object pointers by
the rules below. Every transformers weight must map and every Meta weight must be set.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from tests.sam.reference_sam2 import hf_to_meta_sam2_key, image_encoder_overrides

__all__ = ["meta_video_predictor_from_hf", "video_overrides"]

_VIDEO_RULES: list[tuple[str, str]] = [
    (r"^memory_attention\.layers\.(\d+)\.layer_norm(\d)\.", r"memory_attention.layers.\1.norm\2."),
    (r"^memory_attention\.layer_norm\.", "memory_attention.norm."),
    (r"^memory_attention\.(.*)\.o_proj\.", r"memory_attention.\1.out_proj."),
    (r"^memory_attention\.", "memory_attention."),
    (r"^memory_encoder\.mask_downsampler\.final_conv\.",
     "memory_encoder.mask_downsampler.encoder.@F."),
    (r"^memory_encoder\.mask_downsampler\.layers\.(\d+)\.conv\.",
     "memory_encoder.mask_downsampler.encoder.@C\\1."),
    (r"^memory_encoder\.mask_downsampler\.layers\.(\d+)\.layer_norm\.",
     "memory_encoder.mask_downsampler.encoder.@N\\1."),
    (r"^memory_encoder\.feature_projection\.", "memory_encoder.pix_feat_proj."),
    (r"^memory_encoder\.projection\.", "memory_encoder.out_proj."),
    (r"^memory_encoder\.memory_fuser\.layers\.(\d+)\.depthwise_conv\.",
     r"memory_encoder.fuser.layers.\1.dwconv."),
    (r"^memory_encoder\.memory_fuser\.layers\.(\d+)\.layer_norm\.",
     r"memory_encoder.fuser.layers.\1.norm."),
    (r"^memory_encoder\.memory_fuser\.layers\.(\d+)\.pointwise_conv(\d)\.",
     r"memory_encoder.fuser.layers.\1.pwconv\2."),
    (r"^memory_encoder\.memory_fuser\.layers\.(\d+)\.scale$",
     r"memory_encoder.fuser.layers.\1.gamma"),
    (r"^object_pointer_proj\.proj_in\.", "obj_ptr_proj.layers.0."),
    (r"^object_pointer_proj\.layers\.0\.", "obj_ptr_proj.layers.1."),
    (r"^object_pointer_proj\.proj_out\.", "obj_ptr_proj.layers.2."),
    (r"^temporal_positional_encoding_projection_layer\.", "obj_ptr_tpos_proj."),
    (r"^memory_temporal_positional_encoding$", "maskmem_tpos_enc"),
    (r"^no_memory_positional_encoding$", "no_mem_pos_enc"),
    (r"^no_object_pointer$", "no_obj_ptr"),
    (r"^occlusion_spatial_embedding_parameter$", "no_obj_embed_spatial"),
    (r"^mask_downsample\.", "mask_downsample."),
]  # fmt: skip


def hf_to_meta_key(key: str, downsampler_layers: int) -> str:
    """One transformers ``Sam2VideoModel`` key -> Meta ``SAM2Base`` key (KeyError if unknown)."""
    for pattern, replacement in _VIDEO_RULES:
        new, count = re.subn(pattern, replacement, key)
        if count:
            # Meta's MaskDownSampler is one Sequential: (conv, norm, act) per layer, then a conv
            new = re.sub(r"@C(\d+)", lambda m: str(3 * int(m.group(1))), new)
            new = re.sub(r"@N(\d+)", lambda m: str(3 * int(m.group(1)) + 1), new)
            return new.replace("@F", str(3 * downsampler_layers))
    return hf_to_meta_sam2_key(key)


def video_overrides(config) -> list[str]:
    """Hydra overrides giving Meta's SAM 2.1 tiny config the sizes of a ``Sam2VideoConfig``."""
    hidden = config.memory_attention_hidden_size
    mem = config.memory_encoder_output_channels
    rope = list(config.memory_attention_rope_feat_sizes)
    return [
        f"++model.image_size={config.image_size}",
        f"++model.num_maskmem={config.num_maskmem}",
        *image_encoder_overrides(config),
        f"++model.memory_attention.d_model={hidden}",
        f"++model.memory_attention.num_layers={config.memory_attention_num_layers}",
        f"++model.memory_attention.layer.d_model={hidden}",
        "++model.memory_attention.layer.dim_feedforward="
        f"{config.memory_attention_feed_forward_hidden_size}",
        f"++model.memory_attention.layer.self_attention.embedding_dim={hidden}",
        f"++model.memory_attention.layer.self_attention.feat_sizes={rope}",
        f"++model.memory_attention.layer.cross_attention.embedding_dim={hidden}",
        f"++model.memory_attention.layer.cross_attention.feat_sizes={rope}",
        f"++model.memory_attention.layer.cross_attention.kv_in_dim={mem}",
        f"++model.memory_encoder.out_dim={mem}",
        f"++model.memory_encoder.in_dim={config.memory_encoder_hidden_size}",
        f"++model.memory_encoder.position_encoding.num_pos_feats={mem}",
        f"++model.memory_encoder.mask_downsampler.embed_dim={config.mask_downsampler_embed_dim}",
        f"++model.memory_encoder.fuser.layer.dim={config.memory_fuser_embed_dim}",
        # Meta's build_sam2_video_predictor post-processing, without its hole filling (which
        # needs the CUDA extension; transformers has none): dynamic multimask fallback as in
        # transformers' decoder, masks from clicks binarised for the memory encoder
        "++model.sam_mask_decoder_extra_args.dynamic_multimask_via_stability=true",
        "++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_delta=0.05",
        "++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_thresh=0.98",
        "++model.binarize_mask_from_pts_for_mem_enc=true",
        "++model.fill_hole_area=0",
    ]


def meta_video_predictor_from_hf(model) -> nn.Module:
    """Meta's ``SAM2VideoPredictor`` with exactly the weights of a ``Sam2VideoModel``."""
    from sam2.build_sam import build_sam2_video_predictor

    config = model.config
    dc = config.mask_decoder_config
    if dc.mlp_dim != 2048 or dc.num_attention_heads != 8 or dc.iou_head_hidden_dim != 256:
        raise ValueError("Meta's SAM 2 builder fixes the decoder MLP 2048, 8 heads, IoU head 256")
    meta = build_sam2_video_predictor(
        "configs/sam2.1/sam2.1_hiera_t.yaml", None, device="cpu",
        hydra_overrides_extra=video_overrides(config), apply_postprocessing=False,
    )  # fmt: skip
    layers = sum(1 for k in model.state_dict() if re.match(
        r"memory_encoder\.mask_downsampler\.layers\.\d+\.conv\.weight$", k))  # fmt: skip
    state: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        value = value.detach().to("cpu", torch.float32).clone()
        if key == "prompt_encoder.point_embed.weight":  # one (4, C) table -> four (1, C)
            for i in range(value.shape[0]):
                state[f"sam_prompt_encoder.point_embeddings.{i}.weight"] = value[i : i + 1]
            continue
        meta_key = hf_to_meta_key(key, layers)
        if meta_key in state:
            if not torch.equal(state[meta_key], value):
                raise KeyError(f"{key!r} maps onto {meta_key!r}, already set differently")
            continue
        state[meta_key] = value
    ours = meta.state_dict()
    for k, v in state.items():
        if k in ours and ours[k].shape != v.shape:
            raise KeyError(f"{k}: Meta {tuple(ours[k].shape)} vs transformers {tuple(v.shape)}")
    missing, unexpected = meta.load_state_dict(state, strict=False)
    if unexpected or missing:
        raise KeyError(f"unmapped: Meta lacks {unexpected[:5]}; Meta left unset {missing[:5]}")
    return meta.eval()
