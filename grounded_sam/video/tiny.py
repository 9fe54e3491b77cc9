"""A tiny random SAM 2.1 *video* checkpoint (``Sam2VideoModel``), for tests, benchmarks and docs.

The Hub's SAM 2.1 repositories are ``Sam2VideoModel`` saves (``model_type`` ``"sam2_video"``):
the image back-end (:mod:`grounded_sam.sam.sam2`) loads them as ``Sam2Model`` (ignoring the
video weights) and the propagator (:mod:`grounded_sam.video.propagator`) as
``Sam2VideoModel``. :func:`save_tiny_sam2_video` writes the same kind of folder at a tiny size:
the image path is :func:`grounded_sam.sam.tiny.tiny_sam2_config` (Hiera 16-128) with an FPN /
decoder width of 128, the memory attention has 2 layers of width 128 and the memory features
keep SAM 2.1's 64 channels (transformers fixes the memory cross-attention's key/value width at
64), so an object pointer is split into 2 memory tokens (4 in SAM 2.1).
"""

from __future__ import annotations

from pathlib import Path

import torch

__all__ = ["save_tiny_sam2_video", "tiny_sam2_video_config"]


def tiny_sam2_video_config(image_size: int = 256, hidden: int = 128, memory: int = 64):
    """A ``Sam2VideoConfig``: the tiny SAM 2.1 image path plus a tiny memory bank.

    Args:
        image_size: Input side (1024 released); the memory attention's RoPE grid is
            ``image_size / 16`` square.
        hidden: FPN / decoder / memory-attention width (256 released).
        memory: Channels of the memory features (64 released; transformers' memory attention
            reads 64); object pointers are split into ``hidden / memory`` tokens, as in
            SAM 2.1.

    Returns:
        A ``transformers.Sam2VideoConfig``.
    """
    from transformers import Sam2VideoConfig

    from grounded_sam.sam.tiny import tiny_sam2_config

    image = tiny_sam2_config(image_size=image_size, hidden=hidden)
    side = image_size // 16
    return Sam2VideoConfig(
        vision_config=image.vision_config.to_dict(),
        prompt_encoder_config=image.prompt_encoder_config.to_dict(),
        mask_decoder_config=image.mask_decoder_config.to_dict(),
        image_size=image_size,
        memory_attention_hidden_size=hidden,
        memory_attention_num_layers=2,
        memory_attention_feed_forward_hidden_size=2 * hidden,
        memory_attention_rope_feat_sizes=[side, side],
        memory_encoder_hidden_size=hidden,
        memory_encoder_output_channels=memory,
        mask_downsampler_embed_dim=hidden,
        memory_fuser_embed_dim=hidden,
        memory_fuser_intermediate_dim=4 * hidden,
    )


def save_tiny_sam2_video(directory: str | Path, seed: int = 0, image_size: int = 256) -> Path:
    """Save a tiny random ``Sam2VideoModel`` in ``save_pretrained`` layout.

    Weights are seeded ``N(0, 1 / fan_in)`` with sharpened mask heads (as the image tiny
    builders), one random Fourier matrix for the prompt encoder and the image positions (as the
    released checkpoints), and the object-score head biased towards "object present", so that
    random weights keep tracking an object instead of declaring it gone on frame 1.

    Args:
        directory: Folder to write (created if missing).
        seed: Random seed.
        image_size: Input side of the image encoder.

    Returns:
        The folder: loadable by ``GroundedSAM.from_pretrained(sam=...)`` (as ``Sam2Model``) and
        by :class:`~grounded_sam.video.propagator.Sam2VideoPropagator` (as ``Sam2VideoModel``).
    """
    from transformers import Sam2VideoModel

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = Sam2VideoModel(tiny_sam2_video_config(image_size=image_size))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.ndim >= 2 and "norm" not in name:
                fan_in = param[0].numel()
                param.copy_(torch.randn(param.shape, generator=generator) / fan_in**0.5)
        for name, param in model.named_parameters():
            if "output_hypernetworks_mlps" in name and "proj_out" in name:
                param.mul_(30.0)
        model.prompt_encoder.shared_embedding.positional_embedding.copy_(
            model.shared_image_embedding.positional_embedding
        )
        model.mask_decoder.pred_obj_score_head.proj_out.bias.fill_(4.0)
    model.save_pretrained(directory, safe_serialization=True)
    return directory
