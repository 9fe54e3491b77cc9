"""Tiny random SAM models with the real architecture, for tests, notebooks and CI."""

from __future__ import annotations

from pathlib import Path

import torch

__all__ = ["tiny_sam_config", "save_tiny_sam"]


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


def save_tiny_sam(directory: str | Path, seed: int = 0, image_size: int = 256) -> Path:
    """Save a tiny random ``SamModel`` in ``save_pretrained`` layout.

    The weights are random (seeded) but re-scaled so that the mask decoder produces masks
    with structure (neither empty nor full), which parity tests need.

    Args:
        directory: Folder to write (created if missing).
        seed: Random seed.
        image_size: Input side of the image encoder.

    Returns:
        The directory, loadable with ``GroundedSAM.from_pretrained(sam=str(directory))``.
    """
    from transformers import SamModel

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = SamModel(tiny_sam_config(image_size=image_size))
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
    model.save_pretrained(directory, safe_serialization=True)
    return directory
