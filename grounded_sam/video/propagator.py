"""SAM 2.1 mask propagation through transformers' ``Sam2VideoModel``, streaming, bounded memory.

:class:`Sam2VideoPropagator` is the tracker's :class:`~grounded_sam.video.types.Propagator`
over a transformers ``Sam2VideoModel`` (the released SAM 2.1 checkpoints hold the video
weights; our image back-end :mod:`grounded_sam.sam.sam2` loads the same folders as
``Sam2Model`` and ignores them). How it runs:

* **Streaming.** Frames are handed over one at a time (``model(session, frame_idx=t,
  frame=pixels)``, transformers' streaming mode): the video is never loaded whole.
* **One inference session per track.** SAM 2.1 tracks each object on its own (its memory
  bank, object pointers and prompts are per object; Meta's predictor loops over objects too),
  so a track is one ``Sam2VideoInferenceSession`` holding one object. A track that ends is a
  session dropped; a track that starts is a new session with its prompt (mask or box) on the
  current frame as its conditioning frame. The image encoder runs **once per frame**: the
  first session to see a frame computes its features and they are put into the other
  sessions' feature caches (``session.cache``).
* **Bounded memory bank.** After every frame each session keeps only what the next frame can
  read: SAM 2's memory attention reads the conditioning frame (the prompt) plus the memories
  of the last ``num_maskmem - 1`` frames (6 in SAM 2.1) and the object pointers of the last
  ``max_object_pointers_in_encoder - 1`` frames (15); everything older (and every frame's
  pixels and full-size 1024² mask logits, once its memory is encoded) is deleted. The result is
  exactly what the unpruned session gives (tests/video/test_propagator.py checks this), at a
  constant size per track instead of one growing with the video.
* **Pixels** go through :class:`~grounded_sam.sam.transforms.Sam2Transform`, the same
  preprocessing as the SAM 2.1 image back-end (checked against Meta's), so the key frame the
  grounder sees and the frame the propagator sees are the same pixels.

Prompts are written into the session with its own methods (``obj_id_to_idx``,
``add_point_inputs`` / ``add_mask_inputs``), the exact steps of
``Sam2VideoProcessor.add_inputs_to_inference_session``: a box becomes the two corner points
with labels 2 and 3 scaled to the model's square frame, a mask is resized to that frame
(bilinear, antialiased, >= 0.5), without needing the processor's image / video processor
configs (a model folder written by ``save_pretrained`` does not hold them).

Thread safety: one propagator is one video's state; use one per video (the model may be
shared by propagators used one at a time).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from grounded_sam.errors import ModelLoadError
from grounded_sam.sam.transforms import Sam2Transform
from grounded_sam.video.types import Propagated

__all__ = ["Sam2VideoPropagator", "load_video_model"]

logger = logging.getLogger(__name__)

#: The conditioning object id inside each one-object session.
_OBJ = 1

#: Parts of ``Sam2VideoModel`` that only the video predictor has (absent from ``Sam2Model``).
VIDEO_MODULES = (
    "memory_attention",
    "memory_encoder",
    "mask_downsample",
    "object_pointer_proj",
    "memory_temporal_positional_encoding",
    "no_memory_positional_encoding",
    "no_object_pointer",
    "temporal_positional_encoding_projection_layer",
    "occlusion_spatial_embedding_parameter",
)


def load_video_model(
    spec: str | os.PathLike, device: torch.device | str, dtype: torch.dtype
) -> torch.nn.Module:
    """Load a SAM 2 / 2.1 checkpoint as a transformers ``Sam2VideoModel``.

    Args:
        spec: Hugging Face id (``"facebook/sam2.1-hiera-tiny"``), alias (``"sam2.1_t"``, ...) or
            a local ``save_pretrained`` folder; the same checkpoints as the SAM 2.1 image
            back-end.
        device: Where to put it.
        dtype: Weight precision.

    Returns:
        The model, in eval mode.

    Raises:
        ModelLoadError: Not found, not a SAM 2 checkpoint, or without the video memory
            weights (an image-only ``Sam2Model`` save); the message says what to pass.
    """
    from grounded_sam.hub import hub_session
    from grounded_sam.sam.loading import resolve_sam_checkpoint, sam_hub_model

    with hub_session([sam_hub_model(spec)]):
        ckpt = resolve_sam_checkpoint(spec)
        if ckpt.class_name != "Sam2Model":
            raise ModelLoadError(
                f"{ckpt.spec!r} is a {ckpt.family} checkpoint; propagating masks through a video "
                "needs SAM 2 / 2.1 (its video memory): pass a SAM 2.1 checkpoint such as "
                "facebook/sam2.1-hiera-tiny (alias sam2.1_t) or a local copy of one."
            )
        from transformers import Sam2VideoModel

        try:
            model, info = Sam2VideoModel.from_pretrained(ckpt.source, output_loading_info=True)
        except (OSError, ValueError, RuntimeError) as exc:
            raise ModelLoadError(
                f"Could not load {ckpt.spec!r} as a SAM 2 video model ({exc})."
            ) from exc
    missing = list(info.get("missing_keys") or [])
    if missing:
        video = [k for k in missing if k.split(".")[0] in VIDEO_MODULES]
        what = "its video memory weights (an image-only Sam2Model save?)" if video else "weights"
        raise ModelLoadError(
            f"{ckpt.spec!r} lacks {what}: {len(missing)} missing, e.g. {sorted(missing)[:3]}. "
            "Propagation needs a complete SAM 2.1 checkpoint (the Hub's facebook/sam2.1-hiera-* "
            "repos hold the video weights; a tiny one: "
            "grounded_sam.video.tiny.save_tiny_sam2_video)."
        )
    logger.info("Loaded SAM 2 video model %s on %s (%s)", ckpt.spec, device, dtype)
    return model.to(device=device, dtype=dtype).eval()


class Sam2VideoPropagator:
    """SAM 2.1's memory-based video predictor as the tracker's propagator (module docstring).

    Args:
        model: ``transformers.Sam2VideoModel`` in eval mode (its device and dtype are used).
        bounded: Delete what the next frame cannot read after every frame (default). False
            keeps every frame's outputs, as an unpruned transformers session does (for tests).

    Attributes:
        transform: The pixel preprocessing (:class:`~grounded_sam.sam.transforms.Sam2Transform`
            at the model's input side).
    """

    def __init__(self, model: torch.nn.Module, *, bounded: bool = True) -> None:
        self.model = model
        self.bounded = bounded
        side = model.config.image_size
        self.side = int(side if isinstance(side, int) else side[0])
        self.transform = Sam2Transform(self.side)
        self._sessions: dict[int, Any] = {}
        self._pixels: tuple[int, torch.Tensor] | None = None
        self._features: tuple[int, dict] | None = None

    @classmethod
    def from_pretrained(
        cls,
        spec: str | os.PathLike,
        device: torch.device | str | None = None,
        dtype: torch.dtype | str | None = None,
        **kwargs: Any,
    ) -> Sam2VideoPropagator:
        """Load a SAM 2.1 checkpoint (see :func:`load_video_model`) and wrap it.

        Args:
            spec: Hub id, alias or local folder.
            device: None picks CUDA when present, else CPU.
            dtype: None: float32 on CPU, float16... as :func:`grounded_sam.device.resolve_dtype`.
            **kwargs: For the constructor.
        """
        from grounded_sam.device import resolve_device, resolve_dtype

        dev = resolve_device(device)
        return cls(load_video_model(spec, dev, resolve_dtype(dtype, dev)), **kwargs)

    @property
    def device(self) -> torch.device:
        """Where the model runs."""
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """The model's weight dtype."""
        return next(self.model.parameters()).dtype

    @property
    def track_ids(self) -> list[int]:
        """Ids of the live tracks, in the order they started."""
        return list(self._sessions)

    def share_image_encoder(self, image_model: torch.nn.Module) -> bool:
        """Use an image ``Sam2Model``'s vision encoder (same checkpoint) instead of our copy.

        Saves the encoder's memory when the engine grounds with the same SAM 2.1 checkpoint.

        Args:
            image_model: A ``transformers.Sam2Model`` loaded from the same checkpoint.

        Returns:
            Whether it was shared (same class, device and dtype, same weights).
        """
        ours, theirs = self.model.vision_encoder, getattr(image_model, "vision_encoder", None)
        if theirs is None or type(ours) is not type(theirs) or ours is theirs:
            return ours is theirs
        a, b = ours.state_dict(), theirs.state_dict()
        if a.keys() != b.keys() or any(
            a[k].dtype != b[k].dtype or a[k].device != b[k].device or not torch.equal(a[k], b[k])
            for k in a
        ):
            return False
        self.model.vision_encoder = theirs
        return True

    # -- the Propagator interface --------------------------------------------------------

    @torch.inference_mode()
    def step(self, index: int, frame: np.ndarray) -> Propagated:
        """Propagate every live track to frame ``index`` (see ``Propagator.step``)."""
        pixels = self._frame_pixels(index, frame)
        ids, outs = [], []
        for tid, session in self._sessions.items():
            ids.append(tid)
            outs.append(self._run(session, index, pixels))
        return self._propagated(ids, outs, frame.shape[:2])

    @torch.inference_mode()
    def add(
        self,
        index: int,
        frame: np.ndarray,
        track_ids: Sequence[int],
        masks: np.ndarray,
        boxes: np.ndarray,
        prompt: str = "mask",
    ) -> Propagated:
        """Start one session per new track, prompted on frame ``index`` (``Propagator.add``)."""
        from transformers.models.sam2_video.modeling_sam2_video import Sam2VideoInferenceSession

        if prompt not in ("mask", "box"):
            raise ValueError(f"prompt must be 'mask' or 'box', got {prompt!r}.")
        h, w = frame.shape[:2]
        pixels = self._frame_pixels(index, frame)
        ids, outs = [], []
        for i, tid in enumerate(track_ids):
            tid = int(tid)
            if tid in self._sessions:
                raise ValueError(f"Track {tid} is already live.")
            session = Sam2VideoInferenceSession(
                video_height=h,
                video_width=w,
                inference_device=self.device,
                inference_state_device=self.device,
                video_storage_device=self.device,
                dtype=self.dtype,
            )
            obj_idx = session.obj_id_to_idx(_OBJ)
            if prompt == "box":
                session.add_point_inputs(obj_idx, index, self._box_points(boxes[i], (h, w)))
            else:
                session.add_mask_inputs(obj_idx, index, self._mask_input(masks[i]))
            session.obj_with_new_inputs = [_OBJ]
            self._sessions[tid] = session
            ids.append(tid)
            outs.append(self._run(session, index, pixels))
        return self._propagated(ids, outs, (h, w))

    def remove(self, track_ids: Sequence[int]) -> None:
        """Drop the tracks' sessions (their memory banks are freed)."""
        for tid in track_ids:
            self._sessions.pop(int(tid), None)

    def reset(self) -> None:
        """Forget every track and frame (before another video)."""
        self._sessions.clear()
        self._pixels = self._features = None

    # -- internals ---------------------------------------------------------------------

    def _frame_pixels(self, index: int, frame: np.ndarray) -> torch.Tensor:
        """(1, 3, S, S) model pixels of this frame (computed once per frame)."""
        if self._pixels is None or self._pixels[0] != index:
            self._pixels = (index, self.transform.preprocess(frame, self.device, self.dtype))
        return self._pixels[1]

    def _box_points(self, box: np.ndarray, size: tuple[int, int]) -> dict[str, torch.Tensor]:
        """An xyxy pixel box as SAM 2's two corner points (labels 2, 3) in the model frame."""
        h, w = size
        scale = torch.tensor([self.side / w, self.side / h], dtype=torch.float32)
        corners = torch.as_tensor(np.asarray(box, np.float32).reshape(2, 2)) * scale
        return {
            "point_coords": corners.reshape(1, 1, 2, 2).to(self.device),
            "point_labels": torch.tensor([[[2, 3]]], dtype=torch.int32, device=self.device),
        }

    def _mask_input(self, mask: np.ndarray) -> torch.Tensor:
        """(H, W) bool -> (1, 1, S, S) float 0/1 (resized as the processor does)."""
        m = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None, None]
        m = m.to(self.device)
        if m.shape[-2:] != (self.side, self.side):
            m = F.interpolate(
                m, (self.side, self.side), mode="bilinear", align_corners=False, antialias=True
            )
            m = (m >= 0.5).float()
        return m

    def _run(self, session: Any, index: int, pixels: torch.Tensor) -> Any:
        """One streamed forward of a one-object session on frame ``index``."""
        if self._features is not None and self._features[0] == index:
            if session.cache.get_vision_features(index) is None:
                session.cache.cache_vision_features(index, self._features[1])
        out = self.model(inference_session=session, frame_idx=index, frame=pixels)
        if self._features is None or self._features[0] != index:
            self._features = (index, session.cache.get_vision_features(index))
        if self.bounded:
            self._prune(session, index)
        return out

    def _prune(self, session: Any, index: int) -> None:
        """Delete what no later frame reads (see the module docstring: exact, not lossy)."""
        cfg = self.model.config
        next_frame = index + 1
        keep_memory = next_frame - (int(cfg.num_maskmem) - 1)  # maskmem read from here on
        keep_pointer = next_frame - (int(cfg.max_object_pointers_in_encoder) - 1)
        frames = session.processed_frames or {}
        for f in [f for f in frames if f != index]:
            del frames[f]
        for per_obj in session.output_dict_per_obj.values():
            for kind, outputs in per_obj.items():
                for f in list(outputs):
                    out = outputs[f]
                    out.pop("high_res_masks", None)  # only the memory encoder reads it
                    if kind == "cond_frame_outputs":
                        continue  # the prompt frame: read by every later frame
                    if f < keep_pointer:
                        del outputs[f]
                    elif f < keep_memory:
                        for key in ("maskmem_features", "maskmem_pos_enc", "pred_masks"):
                            out.pop(key, None)
        for tracked in session.frames_tracked_per_obj.values():
            for f in [f for f in tracked if f < keep_pointer]:
                del tracked[f]

    def _propagated(self, ids: list[int], outs: list[Any], size: tuple[int, int]) -> Propagated:
        """Masks at the frame size (one bilinear upscale of the low-res logits, > 0)."""
        h, w = size
        if not ids:
            return Propagated.empty(size)
        logits = torch.cat([o.pred_masks.reshape(1, 1, *o.pred_masks.shape[-2:]) for o in outs])
        masks = F.interpolate(logits.float(), (h, w), mode="bilinear", align_corners=False)
        scores = torch.stack([o.object_score_logits.reshape(-1)[0] for o in outs])
        return Propagated(
            np.asarray(ids, np.int64),
            (masks[:, 0] > 0).cpu().numpy(),
            scores.float().cpu().numpy(),
            logits[:, 0].float().cpu().numpy(),
        )
