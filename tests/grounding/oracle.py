"""A synthetic scene with known objects, and stand-ins for SAM and CLIP that know it.

The stand-ins implement only the model calls (SAM's encoder/decoder, CLIP's embeddings);
everything between them — grid proposals, filtering, crop geometry, scoring, selection,
box re-prompting, deduplication, result assembly — is the real pipeline code.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from grounded_sam.grounding.scoring import DEFAULT_BACKGROUND_PHRASES
from grounded_sam.sam.predictor import SamPredictor
from grounded_sam.sam.transforms import SamTransform


@dataclass
class Scene:
    image: np.ndarray  # (H, W, 3) uint8
    masks: dict[str, np.ndarray]  # name -> (H, W) bool


def make_scene(h: int = 180, w: int = 260) -> Scene:
    """Gray background with a red square, a green disc and a blue triangle."""
    image = np.full((h, w, 3), 128, dtype=np.uint8)
    yy, xx = np.mgrid[:h, :w]
    square = (xx >= 20) & (xx < 80) & (yy >= 30) & (yy < 90)
    disc = (xx - 170) ** 2 + (yy - 60) ** 2 < 35**2
    triangle = (yy >= 110) & (yy < 170) & (np.abs(xx - 110) < (yy - 110) * 0.8)
    masks = {"red square": square, "green circle": disc, "blue triangle": triangle}
    colors = {
        "red square": (220, 30, 30),
        "green circle": (30, 200, 40),
        "blue triangle": (30, 40, 220),
    }
    for name, mask in masks.items():
        image[mask] = colors[name]
    return Scene(image=image, masks=masks)


def paint_scene(
    h: int, w: int, objects: dict[str, tuple[np.ndarray, tuple[int, int, int]]]
) -> Scene:
    """A gray scene from named (mask, color) pairs; the first listed is painted on top."""
    image = np.full((h, w, 3), 128, dtype=np.uint8)
    for mask, color in reversed(objects.values()):
        image[mask] = color
    return Scene(image=image, masks={name: m for name, (m, _) in objects.items()})


def rect(h: int, w: int, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return (xx >= x0) & (xx < x1) & (yy >= y0) & (yy < y1)


def make_lookalike_scene(h: int = 180, w: int = 260) -> Scene:
    """Two red squares (look-alikes), a green disc and a blue triangle."""
    base = make_scene(h, w)
    objects = {n: (m, tuple(int(c) for c in base.image[m][0])) for n, m in base.masks.items()}
    objects["red square 2"] = (rect(h, w, 190, 110, 240, 160), (220, 30, 30))
    return paint_scene(h, w, objects)


def make_house_scene(h: int = 180, w: int = 260) -> Scene:
    """A house with a window (a part, listed first so a click on it returns the part), and a
    second house."""
    return paint_scene(
        h,
        w,
        {
            "window": (rect(h, w, 40, 50, 75, 85), (240, 240, 120)),
            "house": (rect(h, w, 20, 30, 120, 120), (150, 90, 60)),
            "house 2": (rect(h, w, 160, 60, 230, 150), (150, 90, 60)),
        },
    )


class OracleSam(SamPredictor):
    """SAM stand-in: a point returns the (first listed) object under it, a box the object it
    frames; with a box and clicks, the object framed best among those that contain every
    foreground click and no background click.

    ``box_confusions`` maps an object to another one that a box prompt around it returns (as
    real SAM sometimes returns a neighbour or a part for a box) unless clicks disambiguate.
    """

    def __init__(
        self,
        scene: Scene,
        target_length: int = 256,
        box_confusions: dict[str, str] | None = None,
    ) -> None:
        self.transform = SamTransform(target_length)
        self.device = torch.device("cpu")
        self.dtype = torch.float32
        self._image_pe = None
        self.scene = scene
        h, w = scene.image.shape[:2]
        ih, iw = self.transform.input_size((h, w))
        side = self.transform.low_res_size
        objects = np.stack(list(scene.masks.values())).astype(np.float32)
        background = 1.0 - objects.max(0, keepdims=True)
        full = torch.from_numpy(np.concatenate([objects, background]))[:, None]
        resized = F.interpolate(full, (ih // 4, iw // 4), mode="area")[:, 0] > 0.5
        self.low_res = torch.zeros(len(full), side, side, dtype=torch.bool)
        self.low_res[:, : ih // 4, : iw // 4] = resized
        self.boxes = self._boxes(self.low_res) * 4.0  # input-frame xyxy
        self.encoder_calls = 0
        self.decoder_calls = 0
        self.point_box_calls = 0
        names = list(scene.masks)
        self.confusion = torch.arange(len(full))
        for a, b in (box_confusions or {}).items():
            self.confusion[names.index(a)] = names.index(b)

    @staticmethod
    def _boxes(masks: torch.Tensor) -> torch.Tensor:
        out = []
        for m in masks:
            ys, xs = torch.nonzero(m, as_tuple=True)
            out.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        return torch.tensor(out, dtype=torch.float32)

    def _encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        self.encoder_calls += 1
        return torch.zeros(1, 1, 1, 1)

    def _run_decoder(
        self, embeddings, points, labels, boxes, mask_input, multimask_output, extras=()
    ):
        self.decoder_calls += 1
        batch = next(t.shape[0] for t in (points, boxes, mask_input) if t is not None)
        chosen = torch.full((batch,), len(self.low_res) - 1, dtype=torch.long)
        if boxes is not None:
            a, b = boxes[:, None, :], self.boxes[None]
            inter = torch.minimum(a[..., 2:], b[..., 2:]) - torch.maximum(a[..., :2], b[..., :2])
            inter = inter.clamp_min(0).prod(-1)
            area = lambda x: (x[..., 2:] - x[..., :2]).prod(-1)  # noqa: E731
            iou = inter / (area(a) + area(b) - inter)
            chosen = self.confusion[iou.argmax(1)]
            if points is not None:
                self.point_box_calls += 1
                px = (points[..., 0] / 4).long().clamp(0, self.low_res.shape[-1] - 1)
                py = (points[..., 1] / 4).long().clamp(0, self.low_res.shape[-2] - 1)
                hits = self.low_res[:, py, px].permute(1, 2, 0)  # (B, N, objects+1)
                fg, bg = (labels == 1)[..., None], (labels == 0)[..., None]
                fits = (hits | ~fg).all(1) & ~(hits & bg).any(1)  # (B, objects+1)
                clicked = (labels == 1).any(1) | (labels == 0).any(1)
                ranked = torch.where(fits, iou, torch.full_like(iou, -1.0))
                best = ranked.argmax(1)
                use = clicked & fits.any(1)
                chosen = torch.where(use, best, chosen)
        elif points is not None:
            px = (points[:, 0, 0] / 4).long().clamp(0, self.low_res.shape[-1] - 1)
            py = (points[:, 0, 1] / 4).long().clamp(0, self.low_res.shape[-2] - 1)
            hits = self.low_res[:, py, px].T  # (B, objects+1)
            chosen = hits.float().argmax(1)
        logits = torch.where(self.low_res[chosen], 10.0, -10.0)[:, None]
        n = 3 if multimask_output else 1
        iou = torch.tensor([0.95, 0.93, 0.9][:n]).expand(batch, n)
        return logits.expand(-1, n, -1, -1).contiguous(), iou.contiguous()


class OracleScorer:
    """CLIP stand-in: a region's embedding names the object it covers (mask IoU > 0.5)."""

    logit_scale = 100.0

    def __init__(self, scene: Scene, aliases: dict[str, dict[str, float]] | None = None) -> None:
        """``aliases`` gives an object the embedding of a weighted mix of vocabulary words
        (e.g. ``{"window": {"house": 1.0}}``: a window looks like a house)."""
        self.names = list(scene.masks)
        self.aliases = aliases or {}
        extra = sorted({w for mix in self.aliases.values() for w in mix} - set(self.names))
        self.vocab = self.names + extra + list(DEFAULT_BACKGROUND_PHRASES) + ["<unknown>"]
        self.scene = scene
        self.region_calls = 0
        self.text_calls = 0

    def _one_hot(self, i: int) -> torch.Tensor:
        v = torch.zeros(len(self.vocab))
        v[i] = 1.0
        return v

    def encode_text(self, phrases: list[str]) -> torch.Tensor:
        self.text_calls += 1
        rows = [
            self._one_hot(self.vocab.index(p) if p in self.vocab else len(self.vocab) - 1)
            for p in phrases
        ]
        return torch.stack(rows)

    def encode_regions(self, image, boxes, masks):
        self.region_calls += 1
        fh, fw = masks.shape[-2:]
        gt = torch.from_numpy(np.stack([self.scene.masks[n] for n in self.names]))
        gt = F.interpolate(gt[:, None].float(), (fh, fw), mode="area")[:, 0] > 0.5
        inter = (masks[:, None] & gt[None]).flatten(2).sum(-1).float()
        union = (masks[:, None] | gt[None]).flatten(2).sum(-1).float().clamp_min(1)
        iou = inter / union
        best, idx = iou.max(1)
        rows = [
            self._embed(self.names[i]) if b > 0.5 else self._one_hot(self.vocab.index("background"))
            for b, i in zip(best.tolist(), idx.tolist(), strict=True)
        ]
        return torch.stack(rows)

    def _embed(self, name: str) -> torch.Tensor:
        mix = self.aliases.get(name)
        if mix is None:
            return self._one_hot(self.vocab.index(name))
        v = sum(w * self._one_hot(self.vocab.index(word)) for word, w in mix.items())
        return v / v.norm()
