"""Exemplars ("more like this"): boxes turned into a CLIP query vector, and its calibration.

An exemplar region is made exactly like a proposal: SAM decodes the user's box on the kept
image embedding, the mask is sampled into the index's low-res frame, and the CLIP crop is
made from the mask's box and the mask (same crop style as the proposals). Several exemplars
are averaged into one query vector.

Calibration (comparable with the text scores: a probability at CLIP's own temperature that
the region matches the query rather than a generic alternative). A text phrase competes with
generic *phrases* ("background", "an object", ...); an exemplar lives in image space, where
text phrases are not comparable (CLIP's image-image similarities are much higher than its
image-text ones), so its generic alternative is the image's *typical region*, the normalised
mean embedding ``m`` of all the index's regions::

    P(region r looks like the exemplars) = sigmoid(T * (cos(r, e) - cos(r, m)))

with ``e`` the normalised mean exemplar embedding and ``T`` CLIP's logit scale (100). A region
scores above 0.5 when it is closer to the exemplars than to the image's average region. In an
image filled with look-alikes ``m`` drifts towards ``e`` and scores fall towards 0.5: lower the
threshold there, or add a phrase.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from grounded_sam.grounding.index import ImageIndex
from grounded_sam.sam.everything import Proposals
from grounded_sam.sam.predictor import SamPredictor

__all__ = ["embed_exemplars", "exemplar_scores"]


def embed_exemplars(
    predictor: SamPredictor,
    scorer,
    index: ImageIndex,
    boxes: np.ndarray,
) -> torch.Tensor:
    """CLIP embeddings of exemplar regions, made like the proposals' crops.

    Args:
        predictor: SAM predictor (decodes each box on the index's kept embedding).
        scorer: Region scorer with ``encode_regions(image, boxes, frame_masks)``.
        index: The image's index.
        boxes: (E, 4) float32 xyxy exemplar boxes inside the image, original pixels.

    Returns:
        (E, D) L2-normalised embeddings.
    """
    device = index.region_embeddings.device
    box_t = torch.as_tensor(boxes, dtype=torch.float32, device=predictor.device)
    out = predictor.decode(index.embedding, boxes=box_t, multimask_output=False)
    logits = out.low_res_logits[:, 0].float()
    h, w = index.size
    one_crop = Proposals(
        low_res_logits=logits,
        crop_index=torch.zeros(len(boxes), dtype=torch.long, device=logits.device),
        crop_boxes=torch.tensor([[0, 0, w, h]], device=logits.device),
        crop_input_sizes=[tuple(index.embedding.input_size)],
        boxes=box_t,
        predicted_iou=out.iou_scores[:, 0].float(),
        stability_score=torch.ones(len(boxes), device=logits.device),
        point_coords=torch.zeros(len(boxes), 2, device=logits.device),
        original_size=(h, w),
        frame=index.proposals.frame,
    )
    frame = one_crop.frame_masks(tuple(index.frame_masks.shape[-2:]))
    crop_boxes = _frame_boxes(frame, (h, w), box_t.to(frame.device))
    image_t = torch.from_numpy(index.image).to(device).permute(2, 0, 1)
    with torch.inference_mode():
        emb = scorer.encode_regions(image_t, crop_boxes.to(device), frame.to(device))
    return F.normalize(emb.float(), dim=-1)


def _frame_boxes(
    frame: torch.Tensor, size: tuple[int, int], fallback: torch.Tensor
) -> torch.Tensor:
    """Inclusive xyxy boxes (original pixels) of low-res frame masks, like proposals' boxes.

    An empty mask (SAM found nothing in the box) falls back to the user's box; its frame mask
    is then the box itself.
    """
    n, fh, fw = frame.shape
    h, w = size
    out = fallback.clone().float()
    out[:, 2:] -= 1
    for i in range(n):
        ys, xs = torch.nonzero(frame[i], as_tuple=True)
        if ys.numel() == 0:
            x0, y0, x1, y1 = fallback[i].tolist()
            r0, r1 = int(y0 * fh / h), max(int(y0 * fh / h) + 1, round(y1 * fh / h))
            c0, c1 = int(x0 * fw / w), max(int(x0 * fw / w) + 1, round(x1 * fw / w))
            frame[i, r0:r1, c0:c1] = True
            continue
        out[i] = torch.tensor(
            [
                xs.min().item() * w / fw,
                ys.min().item() * h / fh,
                (xs.max().item() + 1) * w / fw - 1,
                (ys.max().item() + 1) * h / fh - 1,
            ]
        )
    return out


def exemplar_scores(
    region_embeddings: torch.Tensor, exemplar_embeddings: torch.Tensor, logit_scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Calibrated similarity of every region to the averaged exemplars (see module doc).

    Args:
        region_embeddings: (N, D) L2-normalised region embeddings of the index.
        exemplar_embeddings: (E, D) L2-normalised exemplar embeddings.
        logit_scale: CLIP's logit scale T.

    Returns:
        ``(score (N,), cosine (N,))``: the probability ``sigmoid(T (cos(r, e) - cos(r, m)))``
        and the raw cosine ``cos(r, e)``.
    """
    regions = region_embeddings.float()
    e = F.normalize(exemplar_embeddings.float().to(regions.device).mean(0), dim=0)
    m = F.normalize(regions.mean(0), dim=0)
    cos_e, cos_m = regions @ e, regions @ m
    return torch.sigmoid(logit_scale * (cos_e - cos_m)), cos_e
