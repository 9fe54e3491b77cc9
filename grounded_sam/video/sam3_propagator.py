"""SAM 3's own tracker as the propagator: ``Sam3TrackerVideoModel`` from the SAM 3 checkpoint.

The Hub's ``facebook/sam3`` is saved by ``Sam3VideoModel``: beside the image detector (which
the SAM 3 grounder loads) it holds SAM 3's tracker, a SAM 2-style memory tracker reading the
detector's ViT backbone through a neck of its own. transformers loads backbone + tracker neck
+ tracker as ``Sam3TrackerVideoModel``, whose forward pass, inference session and memory bank
are ``Sam2VideoModel``'s (only the vision encoder differs). So
:class:`Sam3TrackerPropagator` is :class:`~grounded_sam.video.propagator.Sam2VideoPropagator`
(streaming, one session per track, image encoder once per frame, bounded memory bank: SAM 3
reads the prompt frame, the last ``num_maskmem - 1`` = 6 frames' memories and the last
``max_object_pointers_in_encoder - 1`` = 15 object pointers) with SAM 3's pixels: the
checkpoint's ``Sam3ImageProcessor`` (1008 square, mean = std = 0.5), the same pixels the SAM 3
grounder sees on a key frame.

Tracking with a SAM 3 engine therefore needs no second checkpoint: the key frames are grounded
by SAM 3's detector, the frames between them carried by SAM 3's tracker, and the ViT backbone's
weights are held once (:meth:`Sam3TrackerPropagator.share_image_encoder`). The backbone still
runs twice on a key frame (once for the detector's neck, once for the tracker's).

This is not ``Sam3VideoModel``'s own loop (which runs the detector on every frame and matches
with its own heuristics): our tracker decides when to ground (``every``) and how to match.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
import torch

from grounded_sam.errors import ModelLoadError
from grounded_sam.video.propagator import Sam2VideoPropagator

__all__ = [
    "Sam3TrackerPropagator",
    "check_sam3_tracker",
    "is_sam3_checkpoint",
    "load_sam3_tracker",
]

logger = logging.getLogger(__name__)

#: ``model_type`` of checkpoints that hold SAM 3's tracker (the Hub's layout, or a tracker save).
TRACKER_TYPES = ("sam3_video", "sam3_tracker_video")


def is_sam3_checkpoint(spec: str | os.PathLike) -> bool:
    """Whether ``spec`` names a SAM 3 checkpoint (reads its config only, no weights).

    Raises:
        ModelLoadError: Not found or not a SAM-family checkpoint.
    """
    from grounded_sam.hub import hub_session
    from grounded_sam.sam.loading import resolve_sam_checkpoint, sam_hub_model

    with hub_session([sam_hub_model(spec)]):
        return resolve_sam_checkpoint(spec).grounder is not None


def check_sam3_tracker(spec: str | os.PathLike) -> Any:
    """The resolved checkpoint, when it holds SAM 3's tracker (reads its config only).

    Raises:
        ModelLoadError: Not SAM 3, or an image-only SAM 3 save (``Sam3Model``, no tracker);
            the message says what to pass instead.
    """
    from grounded_sam.sam.loading import resolve_sam_checkpoint

    ckpt = resolve_sam_checkpoint(spec)
    if ckpt.grounder is None:
        raise ModelLoadError(f"{ckpt.spec!r} is a {ckpt.family} checkpoint, not SAM 3.")
    if ckpt.model_type not in TRACKER_TYPES:
        raise ModelLoadError(
            f"{ckpt.spec!r} is an image-only SAM 3 save (model_type {ckpt.model_type!r}) without "
            "SAM 3's video tracker: pass the full checkpoint (facebook/sam3, alias sam3, saved by "
            "Sam3VideoModel; a tiny one: grounded_sam.video.sam3_tiny.save_tiny_sam3_video), or "
            "propagate with SAM 2.1 (propagator='sam2.1_t', on the command line --propagator)."
        )
    return ckpt


def load_sam3_tracker(
    spec: str | os.PathLike, device: torch.device | str, dtype: torch.dtype
) -> tuple[torch.nn.Module, Any]:
    """Load SAM 3's tracker (``Sam3TrackerVideoModel``) and its image processor.

    Args:
        spec: Hub id (``"facebook/sam3"``), alias (``"sam3"``) or local folder in the
            ``Sam3VideoModel`` layout.
        device: Where to put it.
        dtype: Weight precision.

    Returns:
        ``(model, image_processor)``: the model in eval mode; the checkpoint's
        ``Sam3ImageProcessor`` (SAM 3's defaults at the model's input side when the folder has
        none).

    Raises:
        ModelLoadError: Not found, not SAM 3, no tracker, or weights that do not all fit.
    """
    from grounded_sam.hub import hub_session
    from grounded_sam.sam.loading import sam_hub_model

    with hub_session([sam_hub_model(spec)]):
        ckpt = check_sam3_tracker(spec)
        from transformers import Sam3TrackerVideoModel

        try:
            model, info = Sam3TrackerVideoModel.from_pretrained(
                ckpt.source, output_loading_info=True
            )
        except (OSError, ValueError, RuntimeError, TypeError) as exc:
            raise ModelLoadError(
                f"Could not load {ckpt.spec!r} as SAM 3's video tracker "
                f"({type(exc).__name__}: {' '.join(str(exc).split())[:200]})."
            ) from exc
        processor = _image_processor(ckpt.source, int(model.config.image_size))
    missing = sorted(info.get("missing_keys") or [])
    if missing:
        raise ModelLoadError(
            f"{ckpt.spec!r} lacks SAM 3 tracker weights: {len(missing)} missing, e.g. "
            f"{missing[:3]}. Pass a complete SAM 3 checkpoint (facebook/sam3)."
        )
    logger.info("Loaded SAM 3 tracker %s on %s (%s)", ckpt.spec, device, dtype)
    return model.to(device=device, dtype=dtype).eval(), processor


def _image_processor(source: str | None, side: int) -> Any:
    """The checkpoint's ``Sam3ImageProcessor`` (None: none asked), else SAM 3's defaults."""
    import transformers

    cls = getattr(transformers, "Sam3ImageProcessor", None) or transformers.Sam3ImageProcessorFast
    if source is not None:
        try:
            return cls.from_pretrained(source)
        except (OSError, ValueError, TypeError, KeyError):
            logger.info("%s has no image processor config: SAM 3's defaults", source)
    return cls(size={"height": side, "width": side})


class Sam3TrackerPropagator(Sam2VideoPropagator):
    """SAM 3's tracker as the tracker's propagator (module docstring).

    Args:
        model: ``transformers.Sam3TrackerVideoModel`` in eval mode.
        image_processor: The checkpoint's ``Sam3ImageProcessor`` (None: SAM 3's defaults at
            the model's input side).
        bounded: As :class:`~grounded_sam.video.propagator.Sam2VideoPropagator`.
    """

    def __init__(
        self, model: torch.nn.Module, image_processor: Any = None, *, bounded: bool = True
    ) -> None:
        super().__init__(model, bounded=bounded)
        self.image_processor = image_processor or _image_processor(None, self.side)
        size = self.image_processor.size
        if (size["height"], size["width"]) != (self.side, self.side):
            raise ValueError(
                f"The image processor resizes to {size['height']}x{size['width']}, but the SAM 3 "
                f"tracker reads {self.side}x{self.side}: use the checkpoint's own processor."
            )

    @classmethod
    def from_pretrained(
        cls,
        spec: str | os.PathLike,
        device: torch.device | str | None = None,
        dtype: torch.dtype | str | None = None,
        **kwargs: Any,
    ) -> Sam3TrackerPropagator:
        """Load SAM 3's tracker (:func:`load_sam3_tracker`) and wrap it.

        Args:
            spec: Hub id, alias or local folder.
            device: None picks CUDA when present, else CPU.
            dtype: None: as :func:`grounded_sam.device.resolve_dtype`.
            **kwargs: For the constructor.
        """
        from grounded_sam.device import resolve_device, resolve_dtype

        dev = resolve_device(device)
        model, processor = load_sam3_tracker(spec, dev, resolve_dtype(dtype, dev))
        return cls(model, processor, **kwargs)

    def share_image_encoder(self, image_model: torch.nn.Module) -> bool:
        """Use a ``Sam3Model``'s ViT backbone (same checkpoint) instead of our copy.

        The tracker keeps its own neck; the backbone (most of SAM 3's weights) is held once.

        Args:
            image_model: A ``transformers.Sam3Model`` loaded from the same checkpoint.

        Returns:
            Whether it is shared (same class, device, dtype and weights).
        """
        ours = self.model.vision_encoder.backbone
        theirs = getattr(getattr(image_model, "vision_encoder", None), "backbone", None)
        if theirs is None or type(ours) is not type(theirs) or ours is theirs:
            return ours is theirs
        a, b = ours.state_dict(), theirs.state_dict()
        if a.keys() != b.keys() or any(
            a[k].dtype != b[k].dtype or a[k].device != b[k].device or not torch.equal(a[k], b[k])
            for k in a
        ):
            return False
        self.model.vision_encoder.backbone = theirs
        return True

    def _frame_pixels(self, index: int, frame: np.ndarray) -> torch.Tensor:
        """(1, 3, S, S) SAM 3 pixels of this frame (the checkpoint's processor, once per frame)."""
        if self._pixels is None or self._pixels[0] != index:
            out = self.image_processor(images=[frame], return_tensors="pt")["pixel_values"]
            self._pixels = (index, out.to(self.device, self.dtype))
        return self._pixels[1]
