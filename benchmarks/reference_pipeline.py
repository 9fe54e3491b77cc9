"""The pipeline people assemble today, used as the speed reference.

Built only from Meta's ``segment-anything`` package and open_clip, the way the popular
SAM + CLIP notebooks and repos do it:

1. ``SamAutomaticMaskGenerator.generate(image)`` (image encoder + grid decoding, every mask
   brought to full resolution and filtered there);
2. the top ``n_regions`` masks by predicted IoU are cropped one by one with PIL (same crop
   geometry and style as ours: :func:`grounded_sam.clip.regions.make_region_crop_pil`), each
   crop goes through open_clip's own preprocess transform, and the stacked crops go through
   one CLIP image forward;
3. the phrase (with the same prompt templates and background phrases as ours) goes through
   the CLIP text tower; the regions are ranked by calibrated score;
4. the top ``n_boxes`` boxes are re-prompted with Meta's ``SamPredictor``: a new
   ``set_image`` on the same image (as people do: the mask generator owns its own predictor)
   and one batched ``predict_torch`` call with ``multimask_output=False``.

Meta's ``Sam`` is built with the exact weights of a transformers ``SamModel`` through the
conversion in ``tests/sam/reference.py``, so both pipelines run the same network.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.common import ensure_repo_on_path

__all__ = ["ReferencePipeline", "ReferenceRun", "meta_sam_from_transformers"]


def meta_sam_from_transformers(model) -> torch.nn.Module:
    """Meta ``Sam`` (float32, CPU, eval) carrying exactly the weights of a transformers SamModel.

    Args:
        model: ``transformers.SamModel``.

    Returns:
        ``segment_anything.modeling.Sam``; move it to the device you need.
    """
    ensure_repo_on_path()
    from tests.sam.reference import meta_sam_from_hf

    return meta_sam_from_hf(model)


@dataclass
class ReferenceRun:
    """Timings (seconds) and counts of one reference run."""

    encoder: float = 0.0
    proposals: float = 0.0
    clip_regions: float = 0.0
    text: float = 0.0
    reencode: float = 0.0
    box_decode: float = 0.0
    total: float = 0.0
    n_masks: int = 0
    n_scored: int = 0
    n_boxes: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class ReferencePipeline:
    """SAM automatic masks → per-crop CLIP → SAM box prompts, the usual way.

    Args:
        sam: Meta ``Sam`` on its device.
        clip_model: open_clip model (eval) on the same device.
        clip_preprocess: open_clip's eval transform (PIL -> normalised tensor).
        tokenizer: open_clip tokenizer.
        make_crop: ``(image, box_xyxy, mask) -> PIL.Image``, the region crop.
        amg_kwargs: Keyword arguments of ``SamAutomaticMaskGenerator`` (grid, thresholds).
        templates: Prompt templates with one ``{}``.
        background_phrases: Phrases competing with the user's phrase in the softmax.
        n_regions: Masks scored by CLIP (top by predicted IoU).
        n_boxes: Boxes re-prompted.
        reuse_embedding: Re-prompt with the mask generator's predictor instead of a fresh
            ``set_image`` (not what people usually do; off by default).
    """

    def __init__(
        self,
        sam: torch.nn.Module,
        clip_model: torch.nn.Module,
        clip_preprocess: Callable,
        tokenizer: Callable,
        make_crop: Callable,
        amg_kwargs: dict[str, Any],
        templates: Sequence[str],
        background_phrases: Sequence[str],
        n_regions: int = 100,
        n_boxes: int = 10,
        reuse_embedding: bool = False,
    ) -> None:
        from segment_anything import SamAutomaticMaskGenerator, SamPredictor

        self.sam = sam
        self.device = next(sam.parameters()).device
        self.clip_model = clip_model
        self.clip_preprocess = clip_preprocess
        self.tokenizer = tokenizer
        self.make_crop = make_crop
        self.amg = SamAutomaticMaskGenerator(sam, **amg_kwargs)
        self.predictor = self.amg.predictor if reuse_embedding else SamPredictor(sam)
        self.reuse_embedding = reuse_embedding
        self.templates = list(templates)
        self.background_phrases = list(background_phrases)
        self.n_regions = n_regions
        self.n_boxes = n_boxes
        self.logit_scale = float(clip_model.logit_scale.detach().float().exp().reshape(-1)[0])
        self._timing: dict[str, float] = {}
        self._wrap_set_image(self.amg.predictor)

    def _wrap_set_image(self, predictor) -> None:
        """Time the mask generator's encoder pass separately from its grid decoding."""
        original = predictor.set_image

        def timed(image, image_format="RGB"):
            t0 = time.perf_counter()
            original(image, image_format)
            self._sync()
            self._timing["encoder"] = self._timing.get("encoder", 0.0) + time.perf_counter() - t0

        predictor.set_image = timed

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def encode_text(self, phrases: Sequence[str]) -> torch.Tensor:
        """(P, D) template-averaged, L2-normalised phrase embeddings (no cache)."""
        from grounded_sam.clip.text import fill_template

        prompts = [fill_template(t, p) for p in phrases for t in self.templates]
        tokens = self.tokenizer(prompts).to(self.device)
        with torch.no_grad():
            emb = F.normalize(self.clip_model.encode_text(tokens).float(), dim=-1)
        emb = emb.view(len(phrases), len(self.templates), -1).mean(1)
        return F.normalize(emb, dim=-1)

    def run(self, image: np.ndarray, phrase: str) -> tuple[ReferenceRun, dict[str, Any]]:
        """Answer one phrase on one image from scratch.

        Args:
            image: (H, W, 3) uint8 RGB.
            phrase: The text prompt (one phrase).

        Returns:
            Timings/counts and the output (``masks`` (M, H, W) bool, ``scores`` (M,)).
        """
        run = ReferenceRun()
        self._timing = {}
        t_start = time.perf_counter()
        # 1. proposals (the encoder runs inside, timed by the set_image wrapper)
        records = self.amg.generate(image)
        self._sync()
        t_amg = time.perf_counter()
        run.encoder = self._timing.get("encoder", 0.0)
        run.proposals = (t_amg - t_start) - run.encoder
        run.n_masks = len(records)
        records = sorted(records, key=lambda r: r["predicted_iou"], reverse=True)
        records = records[: self.n_regions]
        run.n_scored = len(records)
        # 2. CLIP on each crop: PIL crop -> open_clip preprocess -> stack -> one forward
        boxes = np.array(
            [[x, y, x + w, y + h] for x, y, w, h in (r["bbox"] for r in records)],
            dtype=np.float32,
        ).reshape(-1, 4)
        if records:
            pixels = torch.stack(
                [
                    self.clip_preprocess(self.make_crop(image, box, r["segmentation"]))
                    for box, r in zip(boxes, records, strict=True)
                ]
            ).to(self.device)
            with torch.no_grad():
                regions = F.normalize(self.clip_model.encode_image(pixels).float(), dim=-1)
        else:
            regions = torch.zeros(0, 1, device=self.device)
        self._sync()
        t_clip = time.perf_counter()
        run.clip_regions = t_clip - t_amg
        # 3. text + ranking
        text = self.encode_text([phrase, *self.background_phrases])
        if len(records):
            probs = torch.softmax(regions @ text.T * self.logit_scale, dim=-1)[:, 0]
            top = torch.argsort(probs, descending=True)[: self.n_boxes].cpu()
        else:
            probs = torch.zeros(0)
            top = torch.zeros(0, dtype=torch.long)
        self._sync()
        t_text = time.perf_counter()
        run.text = t_text - t_clip
        # 4. box re-prompt with Meta's predictor
        masks = np.zeros((0, *image.shape[:2]), dtype=bool)
        if len(top):
            if not self.reuse_embedding:
                self.predictor.set_image(image)
                self._sync()
            t_enc = time.perf_counter()
            run.reencode = t_enc - t_text
            box_t = torch.as_tensor(boxes[top.numpy()], device=self.device)
            box_t = self.predictor.transform.apply_boxes_torch(box_t, image.shape[:2])
            with torch.no_grad():
                out, _, _ = self.predictor.predict_torch(
                    point_coords=None, point_labels=None, boxes=box_t, multimask_output=False
                )
            masks = out[:, 0].cpu().numpy()
            self._sync()
            run.box_decode = time.perf_counter() - t_enc
            run.n_boxes = int(box_t.shape[0])
        run.total = time.perf_counter() - t_start
        return run, {"masks": masks, "scores": probs[top].cpu().numpy() if len(top) else probs}

    def label(self, image: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
        """Label one image with many class names the usual way: one proposal + CLIP pass,
        one text pass over all classes, the top ``n_boxes`` regions of every class
        re-prompted (each region once) with a fresh ``set_image``.

        Returns:
            ``{"total": seconds, "n_boxes": boxes decoded, "n_scored": regions scored}``.
        """
        from grounded_sam.clip.text import fill_template  # noqa: F401 - used by encode_text

        t0 = time.perf_counter()
        records = sorted(self.amg.generate(image), key=lambda r: r["predicted_iou"], reverse=True)
        records = records[: self.n_regions]
        boxes = np.array(
            [[x, y, x + w, y + h] for x, y, w, h in (r["bbox"] for r in records)],
            dtype=np.float32,
        ).reshape(-1, 4)
        n_boxes = 0
        if records:
            pixels = torch.stack(
                [
                    self.clip_preprocess(self.make_crop(image, box, r["segmentation"]))
                    for box, r in zip(boxes, records, strict=True)
                ]
            ).to(self.device)
            with torch.no_grad():
                regions = F.normalize(self.clip_model.encode_image(pixels).float(), dim=-1)
            text = self.encode_text([*classes, *self.background_phrases])
            probs = torch.softmax(regions @ text.T * self.logit_scale, dim=-1)[:, : len(classes)]
            k = min(self.n_boxes, len(records))
            top = torch.unique(torch.topk(probs, k, dim=0).indices.flatten()).cpu()
            self.predictor.set_image(image)
            box_t = torch.as_tensor(boxes[top.numpy()], device=self.device)
            box_t = self.predictor.transform.apply_boxes_torch(box_t, image.shape[:2])
            with torch.no_grad():
                out, _, _ = self.predictor.predict_torch(
                    point_coords=None, point_labels=None, boxes=box_t, multimask_output=False
                )
            out.cpu()
            n_boxes = int(box_t.shape[0])
        self._sync()
        return {"total": time.perf_counter() - t0, "n_boxes": n_boxes, "n_scored": len(records)}
