"""Tiny random SAM models with the real architecture, for tests, notebooks and CI.

One builder per family, each named by its family's registry record
(:mod:`grounded_sam.sam.families`, which also gives the transformers class instantiated here);
:func:`save_tiny` builds any family by name.
"""

from __future__ import annotations

from pathlib import Path

import torch

from grounded_sam.sam import families

__all__ = [
    "save_tiny",
    "tiny_sam_config",
    "save_tiny_sam",
    "structure_tiny_sam",
    "tiny_sam_hq_config",
    "save_tiny_sam_hq",
    "tiny_sam2_config",
    "save_tiny_sam2",
]


def save_tiny(family: str, directory: str | Path, seed: int = 0, image_size: int = 256) -> Path:
    """Save a tiny random model of a family (registry name or ``model_type``).

    Args:
        family: ``"sam"``, ``"sam_hq"``, ``"sam2"`` (see :func:`grounded_sam.sam.families.names`).
        directory: Folder to write (created if missing).
        seed: Random seed.
        image_size: Input side of the image encoder.

    Returns:
        The directory, loadable with ``GroundedSAM.from_pretrained(sam=str(directory))``.

    Raises:
        ValueError: No such family.
    """
    return families.get(family).save_tiny(directory, seed=seed, image_size=image_size)


def _model_class(family: str) -> type:
    """The transformers class of a family (from its registry record)."""
    import transformers

    return getattr(transformers, families.get(family).model_class)


def tiny_sam_config(image_size: int = 256, hidden: int = 32, vision_width: int = 64):
    """A ``SamConfig`` with the real SAM architecture at a tiny size.

    Args:
        image_size: Input side of the image encoder (the "1024" of full SAM). With patch 16 the
            embedding is ``image_size / 16`` square and low-res masks are ``image_size / 4``.
        hidden: Width of the prompt encoder / mask decoder (256 in full SAM).
        vision_width: Width of the ViT image encoder (768 for ViT-B).

    Returns:
        A ``transformers.SamConfig``.
    """
    from transformers import SamConfig

    vision = {
        "hidden_size": vision_width,
        "output_channels": hidden,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": image_size,
        "patch_size": 16,
        "window_size": 4,
        "global_attn_indexes": [1],
        "num_pos_feats": hidden // 2,
        "mlp_dim": vision_width * 2,
    }
    prompt = {
        "hidden_size": hidden,
        "image_size": image_size,
        "patch_size": 16,
        "mask_input_channels": 16,
    }
    decoder = {
        "hidden_size": hidden,
        "mlp_dim": hidden * 2,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "iou_head_hidden_dim": hidden,
    }
    return SamConfig(
        vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder
    )


def save_tiny_sam(
    directory: str | Path, seed: int = 0, image_size: int = 256, structured: bool = False
) -> Path:
    """Save a tiny random ``SamModel`` in ``save_pretrained`` layout.

    The weights are random (seeded) but re-scaled so that the mask decoder produces masks
    with structure (neither empty nor full), which parity tests need.

    Args:
        directory: Folder to write (created if missing).
        seed: Random seed.
        image_size: Input side of the image encoder.
        structured: Apply :func:`structure_tiny_sam`, so that masks follow image content
            (uniform regions) instead of being texture; pipelines then give several distinct
            proposals per image, as with trained weights.

    Returns:
        The directory, loadable with ``GroundedSAM.from_pretrained(sam=str(directory))``.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = _model_class("sam")(tiny_sam_config(image_size=image_size))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.ndim >= 2 and "layer_norm" not in name:
                fan_in = param[0].numel()
                param.copy_(torch.randn(param.shape, generator=generator) / fan_in**0.5)
        # Sharpen the mask logits (std ~5 instead of ~0.2) so that stability scores and
        # thresholds behave as with trained weights rather than all masks being unstable.
        for name, param in model.named_parameters():
            if "output_hypernetworks_mlps" in name and "proj_out" in name:
                param.mul_(30.0)
    if structured:
        structure_tiny_sam(model)
    model.save_pretrained(directory, safe_serialization=True)
    return directory


def structure_tiny_sam(model) -> None:
    """Re-arrange a tiny random ``SamModel``'s weights in place so that masks follow content.

    Every change keeps the real architecture and only re-uses (averages, zeroes, rescales) the
    random weights, so Meta's model can carry exactly the same values:

    * ViT attention output projections and relative positions set to 0: each patch token is
      computed from its own patch only (no mixing across the image);
    * patch embedding averaged over the 16x16 kernel (x4): a token is a function of its patch's
      mean colour, so uniform regions give identical tokens;
    * neck 3x3 convolution reduced to its centre tap (x3): no zero-padding seams at the borders;
    * output-upscaling transposed convolutions averaged over their 2x2 kernels: upsampling
      without the checkerboard texture;
    * the random Fourier positional matrix drawn with std 1 (Meta's initialisation scale), so
      the decoder sees where a point is.

    Args:
        model: ``transformers.SamModel`` (modified in place).
    """
    with torch.no_grad():
        for name, param in model.vision_encoder.named_parameters():
            if "rel_pos" in name or name.endswith("attn.proj.weight"):
                param.zero_()
        patch = model.vision_encoder.patch_embed.projection.weight
        patch.copy_(patch.mean((-1, -2), keepdim=True).expand_as(patch) * 4)
        neck = model.vision_encoder.neck.conv2.weight
        centre = neck[..., 1, 1].clone()
        neck.zero_()
        neck[..., 1, 1] = centre * 3
        for conv in (model.mask_decoder.upscale_conv1, model.mask_decoder.upscale_conv2):
            conv.weight.copy_(conv.weight.mean((-1, -2), keepdim=True).expand_as(conv.weight))
        pe = torch.randn(
            2,
            model.shared_image_embedding.positional_embedding.shape[1],
            generator=torch.Generator().manual_seed(1),
        )
        model.shared_image_embedding.positional_embedding.copy_(pe)
        model.prompt_encoder.shared_embedding.positional_embedding.copy_(pe)


def tiny_sam_hq_config(image_size: int = 256, hidden: int = 32, vision_width: int = 64):
    """A ``SamHQConfig`` with the real HQ-SAM architecture at a tiny size.

    Same sizes as :func:`tiny_sam_config`; the HQ decoder's ``vit_dim`` is the ViT width.
    """
    from transformers import SamHQConfig

    sam = tiny_sam_config(image_size=image_size, hidden=hidden, vision_width=vision_width)
    decoder = sam.mask_decoder_config.to_dict()
    decoder["vit_dim"] = vision_width
    return SamHQConfig(
        vision_config=sam.vision_config.to_dict(),
        prompt_encoder_config=sam.prompt_encoder_config.to_dict(),
        mask_decoder_config=decoder,
    )


def _scale_random(model, seed: int) -> None:
    """Seeded 1/sqrt(fan_in) weights, sharpened mask heads (as :func:`save_tiny_sam`)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.ndim >= 2 and "layer_norm" not in name and not name.endswith("_norm.weight"):
                fan_in = param[0].numel()
                param.copy_(torch.randn(param.shape, generator=generator) / fan_in**0.5)
        for name, param in model.named_parameters():
            head = "output_hypernetworks_mlps" in name or "hq_mask_mlp" in name
            if head and "proj_out" in name:
                param.mul_(30.0)


def save_tiny_sam_hq(directory: str | Path, seed: int = 0, image_size: int = 256) -> Path:
    """Save a tiny random ``SamHQModel`` in ``save_pretrained`` layout.

    Weights are drawn and scaled as in :func:`save_tiny_sam`.

    Args:
        directory: Folder to write (created if missing).
        seed: Random seed.
        image_size: Input side of the image encoder.

    Returns:
        The directory, loadable with ``GroundedSAM.from_pretrained(sam=str(directory))``.
    """
    directory = Path(directory)
    config = tiny_sam_hq_config(image_size=image_size)
    model = _random_model(_model_class("sam_hq"), config, directory, seed)
    model.save_pretrained(directory, safe_serialization=True)
    return directory


def _random_model(model_cls: type, config: object, directory: Path, seed: int) -> torch.nn.Module:
    """``model_cls(config)`` with seeded, scaled random weights; creates ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = model_cls(config)
    _scale_random(model, seed)
    return model


def tiny_sam2_config(image_size: int = 256, hidden: int = 32):
    """A ``Sam2Config`` with the real SAM 2.1 architecture (Hiera, FPN, SAM 2 decoder), tiny.

    The Hiera trunk has stages of 1, 1, 2, 1 blocks (block 3 with global attention), widths
    16/32/64/128 (SAM 2.1 tiny: 96-768) and heads 1/2/4/8; the decoder keeps SAM 2's fixed
    MLP width (2048), 8 heads and IoU head width (256), which Meta's builder hard-codes.

    Args:
        image_size: Input side (1024 for the released models); the image embedding is
            ``image_size / 16`` square, the high-resolution features ``/ 4`` and ``/ 8``.
        hidden: Width of the FPN, prompt encoder and mask decoder (256 released).

    Returns:
        A ``transformers.Sam2Config``.
    """
    from transformers import Sam2Config

    widths = [16, 32, 64, 128]
    sizes = [[image_size // 4, image_size // 4], [image_size // 8] * 2, [image_size // 16] * 2]
    backbone = {
        "model_type": "sam2_hiera_det_model",
        "hidden_size": widths[0],
        "num_attention_heads": 1,
        "image_size": [image_size, image_size],
        "blocks_per_stage": [1, 1, 2, 1],
        "embed_dim_per_stage": widths,
        "num_attention_heads_per_stage": [1, 2, 4, 8],
        "window_size_per_stage": [8, 4, 4, 8],
        "global_attention_blocks": [3],
        "window_positional_embedding_background_size": [7, 7],
    }
    vision = {
        "model_type": "sam2_vision_model",
        "backbone_config": backbone,
        "backbone_channel_list": widths[::-1],
        "backbone_feature_sizes": sizes,
        "fpn_hidden_size": hidden,
    }
    prompt = {"hidden_size": hidden, "image_size": image_size, "patch_size": 16}
    decoder = {"hidden_size": hidden, "mlp_dim": 2048, "num_attention_heads": 8}
    return Sam2Config(
        vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder
    )


def save_tiny_sam2(directory: str | Path, seed: int = 0, image_size: int = 256) -> Path:
    """Save a tiny random ``Sam2Model`` in ``save_pretrained`` layout.

    Weights are drawn and scaled as in :func:`save_tiny_sam`.

    Args:
        directory: Folder to write (created if missing).
        seed: Random seed.
        image_size: Input side of the image encoder.

    Returns:
        The directory, loadable with ``GroundedSAM.from_pretrained(sam=str(directory))``.
    """
    directory = Path(directory)
    config = tiny_sam2_config(image_size=image_size)
    model = _random_model(_model_class("sam2"), config, directory, seed)
    with torch.no_grad():  # one random Fourier matrix, as in the released checkpoints
        model.prompt_encoder.shared_embedding.positional_embedding.copy_(
            model.shared_image_embedding.positional_embedding
        )
    model.save_pretrained(directory, safe_serialization=True)
    return directory
