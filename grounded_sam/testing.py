"""Tiny random models with the real architectures, for tests, notebooks and CI.

They load through exactly the same code as real checkpoints
(``GroundedSAM.from_pretrained(sam=sam_dir, clip=f"local-dir:{clip_dir}")``) but their
outputs are meaningless: use them to exercise the machinery, never to judge quality.
"""

from __future__ import annotations

from pathlib import Path

from grounded_sam.clip.testing_models import save_tiny_clip
from grounded_sam.sam.tiny import save_tiny_sam

__all__ = ["save_tiny_clip", "save_tiny_sam", "save_tiny_models"]


def save_tiny_models(directory: str | Path) -> tuple[str, str]:
    """Write a tiny SAM and a tiny CLIP under ``directory``.

    Args:
        directory: Parent folder (created if missing).

    Returns:
        ``(sam_spec, clip_spec)`` to pass to ``GroundedSAM.from_pretrained``.
    """
    import transformers.utils.logging as hf_logging

    directory = Path(directory)
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # transformers' "Writing model shards" bar says nothing here
    try:
        sam_dir = save_tiny_sam(directory / "tiny-sam", structured=True)
        clip_dir = save_tiny_clip(directory / "tiny-clip")
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    return str(sam_dir), f"local-dir:{clip_dir}"
