"""A tiny random SAM 3 *video* checkpoint (``Sam3VideoModel`` layout), for tests and docs.

The Hub's ``facebook/sam3`` is a ``Sam3VideoModel`` save (``model_type`` ``"sam3_video"``): the
image detector's weights under ``detector_model.``, SAM 3's tracker (a SAM 2-style memory
tracker) under ``tracker_model.`` and the tracker's own FPN neck under ``tracker_neck.``; the
tracker reads the detector's ViT backbone. The image grounder (:mod:`grounded_sam.sam.sam3`)
loads such a folder as ``Sam3Model`` (the detector only); the SAM 3 propagator
(:mod:`grounded_sam.video.sam3_propagator`) as ``Sam3TrackerVideoModel`` (backbone + tracker
neck + tracker). :func:`save_tiny_sam3_video` writes the same kind of folder at a tiny size,
with the processor (CLIP tokenizer rebuilt offline) the image grounder needs.

Sizes: the detector is :func:`grounded_sam.sam.sam3_tiny.tiny_sam3_config` at width 128; the
tracker's memory attention has 1 layer of width 128 and its memory features keep SAM 3's 64
channels (transformers fixes the memory cross-attention's key/value width at 64), so an object
pointer is split into 2 memory tokens (4 released).
"""

from __future__ import annotations

from pathlib import Path

import torch

__all__ = ["save_tiny_sam3_video", "tiny_sam3_video_config"]


def tiny_sam3_video_config(image_size: int = 112, hidden: int = 128, memory: int = 64):
    """A ``Sam3VideoConfig``: the tiny SAM 3 detector plus a tiny SAM 3 tracker.

    Args:
        image_size: Input side (1008 released), a multiple of the 14-pixel patch; the tracker's
            low-resolution masks are ``4 * image_size / 14`` square (288 released).
        hidden: Width of the FPN necks, detector, tracker decoder and memory attention (256
            released); a multiple of ``memory``.
        memory: Channels of the memory features (64 released; transformers reads 64).

    Returns:
        A ``transformers.Sam3VideoConfig``.
    """
    from transformers import Sam3TrackerVideoConfig, Sam3VideoConfig

    from grounded_sam.sam.sam3_tiny import tiny_sam3_config

    if hidden % memory:
        raise ValueError(f"hidden ({hidden}) must be a multiple of memory ({memory}).")
    detector = tiny_sam3_config(image_size, hidden=hidden)
    tracker = Sam3TrackerVideoConfig(
        vision_config=detector.vision_config.to_dict(),
        prompt_encoder_config={"hidden_size": hidden, "image_size": image_size, "patch_size": 14},
        mask_decoder_config={
            "hidden_size": hidden,
            "num_attention_heads": 2,
            "mlp_dim": 2 * hidden,
            "iou_head_hidden_dim": hidden,
        },
        image_size=image_size,
        memory_attention_hidden_size=hidden,
        memory_attention_num_layers=1,
        memory_attention_feed_forward_hidden_size=2 * hidden,
        memory_encoder_hidden_size=hidden,
        memory_encoder_output_channels=memory,
        mask_downsampler_embed_dim=hidden,
        memory_fuser_embed_dim=hidden,
        memory_fuser_intermediate_dim=2 * hidden,
    )
    return Sam3VideoConfig(
        detector_config=detector.to_dict(),
        tracker_config=tracker.to_dict(),
        low_res_mask_size=4 * (image_size // 14),
    )


def save_tiny_sam3_video(directory: str | Path, seed: int = 0, image_size: int = 112) -> Path:
    """Save a tiny random ``Sam3VideoModel`` and its processor in ``save_pretrained`` layout.

    Weights are seeded ``N(0, 1 / fan_in)`` (as :func:`grounded_sam.sam.sam3_tiny.save_tiny_sam3`),
    with the tracker's mask heads sharpened, its prompt encoder sharing one random Fourier
    matrix with the image positions (as the released checkpoints) and its object-score head
    biased towards "object present" (as :func:`grounded_sam.video.tiny.save_tiny_sam2_video`), so
    that random weights keep tracking an object instead of declaring it gone on frame 1.
    Nothing is trained: the masks are meaningless but not empty.

    Args:
        directory: Folder to write (created if missing).
        seed: Random seed.
        image_size: Input side (a multiple of 14).

    Returns:
        The folder: loadable by ``GroundedSAM.from_pretrained(sam=...)`` (SAM 3 as the grounder)
        and by :class:`~grounded_sam.video.sam3_propagator.Sam3TrackerPropagator`.
    """
    from transformers import Sam3VideoModel

    from grounded_sam.sam.sam3_tiny import _fan_in_init, save_tiny_sam3_processor

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = Sam3VideoModel(tiny_sam3_video_config(image_size)).eval()
    _fan_in_init(model, seed)
    tracker = model.tracker_model
    with torch.no_grad():
        for name, param in tracker.named_parameters():
            if "output_hypernetworks_mlps" in name and "proj_out" in name:
                param.mul_(30.0)
        tracker.prompt_encoder.shared_embedding.positional_embedding.copy_(
            tracker.shared_image_embedding.positional_embedding
        )
        tracker.mask_decoder.pred_obj_score_head.proj_out.bias.fill_(4.0)
    model.save_pretrained(directory, safe_serialization=True)
    save_tiny_sam3_processor(directory, image_size)
    return directory
