"""Tiny random SAM 3 checkpoints (model + processor) for tests, examples and CI.

A SAM 3 processor needs CLIP's BPE tokenizer; :func:`clip_bpe_tokenizer` rebuilds it offline
from the vocabulary file open_clip ships, so nothing is downloaded.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import torch

from grounded_sam.sam.sam3 import TEXT_LENGTH

__all__ = ["clip_bpe_tokenizer", "save_tiny_sam3", "save_tiny_sam3_processor", "tiny_sam3_config"]


def clip_bpe_tokenizer(bpe_path: str | os.PathLike | None = None):
    """CLIP's BPE tokenizer as a transformers ``CLIPTokenizer``, built offline.

    From the vocabulary file open_clip ships (``bpe_simple_vocab_16e6.txt.gz``, the one
    OpenAI's CLIP and SAM 3's text encoder were trained with): 256 byte tokens, the same with
    ``</w>``, 48,894 merges, then ``<|startoftext|>`` (49406) and ``<|endoftext|>`` (49407),
    in open_clip's order, so ids agree with ``open_clip.tokenize``.

    Args:
        bpe_path: The ``.txt.gz`` file (None: open_clip's own copy).

    Returns:
        A ``transformers.CLIPTokenizer`` (vocabulary 49,408).
    """
    from transformers import CLIPTokenizer

    if bpe_path is None:
        from open_clip.tokenizer import default_bpe

        bpe_path = default_bpe()
    lines = gzip.open(bpe_path).read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
    byte_tokens = list(_bytes_to_unicode().values())
    vocab = byte_tokens + [t + "</w>" for t in byte_tokens] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={t: i for i, t in enumerate(vocab)}, merges=merges)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2 / CLIP's reversible byte -> printable character map (open_clip's order)."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs], strict=True))


def tiny_sam3_config(image_size: int = 112, hidden: int = 32, num_queries: int = 16):
    """A ``Sam3Config`` with SAM 3's real architecture at a tiny size.

    Args:
        image_size: Input side (the released 1008); a multiple of the 14-pixel patch. The
            DETR encoder reads ``image_size / 14`` square tokens; masks are 4x that side.
        hidden: Width of the FPN, the DETR encoder / decoder, the geometry encoder and the
            mask decoder (256 released); a multiple of 8.
        num_queries: Object queries of the DETR decoder (200 released).

    Returns:
        A ``transformers.Sam3Config``.
    """
    from transformers import Sam3Config

    if image_size % 14:
        raise ValueError(f"image_size must be a multiple of 14 (the patch), got {image_size}.")
    side = image_size // 14
    small = {"hidden_size": hidden, "num_attention_heads": 2, "intermediate_size": 2 * hidden}
    return Sam3Config(
        vision_config={
            "backbone_config": {
                "model_type": "sam3_vit_model",
                "hidden_size": hidden,
                "intermediate_size": 2 * hidden,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "image_size": image_size,
                "pretrain_image_size": image_size,
                "patch_size": 14,
                "window_size": max(2, side // 2),
                "global_attn_indexes": [1],
            },
            "fpn_hidden_size": hidden,
            "backbone_feature_sizes": [[4 * side] * 2, [2 * side] * 2, [side] * 2],
        },
        text_config={
            "model_type": "clip_text_model",
            "vocab_size": 49408,
            "hidden_size": hidden,
            "intermediate_size": 2 * hidden,
            "projection_dim": hidden,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "max_position_embeddings": TEXT_LENGTH,
        },
        geometry_encoder_config={**small, "num_layers": 1, "roi_size": 3},
        detr_encoder_config={**small, "num_layers": 1},
        detr_decoder_config={**small, "num_layers": 2, "num_queries": num_queries},
        mask_decoder_config={"hidden_size": hidden, "num_attention_heads": 2},
    )


def _fan_in_init(model: torch.nn.Module, seed: int) -> None:
    """Seeded N(0, 1/fan_in) weight matrices, kernels and embeddings (norms kept).

    With transformers' own initialisation (N(0, 0.02)) the tiny model's object queries are
    almost alike: every query scores about 0.25 and most masks cover the whole image. Fan-in
    scaled weights spread the scores and give small masks of their own (random weights still
    give overlapping masks: nothing is trained).
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.ndim >= 2 and "norm" not in name:
                fan_in = param[0].numel()
                param.copy_(torch.randn(param.shape, generator=generator) / fan_in**0.5)


def save_tiny_sam3(directory: str | Path, seed: int = 0, image_size: int = 112) -> Path:
    """Save a tiny random SAM 3 and its processor (CLIP tokenizer rebuilt offline).

    Weights are seeded N(0, 1/fan_in) (:func:`_fan_in_init`): an untrained model of the
    real architecture. Its output is meaningless.

    Args:
        directory: Folder to write (created if missing).
        seed: Random seed.
        image_size: Input side (a multiple of 14).

    Returns:
        The folder, loadable with ``GroundedSAM.from_pretrained(sam=str(directory))``.
    """
    import transformers

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = transformers.Sam3Model(tiny_sam3_config(image_size)).eval()
    _fan_in_init(model, seed)
    model.save_pretrained(directory)
    save_tiny_sam3_processor(directory, image_size)
    return directory


def save_tiny_sam3_processor(directory: str | Path, image_size: int = 112) -> Path:
    """Save a ``Sam3Processor`` for a tiny SAM 3 (input side ``image_size``) into ``directory``.

    Args:
        directory: The model's folder.
        image_size: Input side (a multiple of 14).

    Returns:
        The folder.
    """
    import transformers

    directory = Path(directory)
    side = image_size // 14 * 4
    # transformers 5.1 names it Sam3ImageProcessorFast; later releases Sam3ImageProcessor
    image_cls = getattr(transformers, "Sam3ImageProcessor", None)
    image_cls = image_cls or transformers.Sam3ImageProcessorFast
    images = image_cls(
        size={"height": image_size, "width": image_size}, mask_size={"height": side, "width": side}
    )
    processor = transformers.Sam3Processor(images, clip_bpe_tokenizer(), target_size=image_size)
    processor.save_pretrained(directory)
    return directory
