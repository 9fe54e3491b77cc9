"""The phrase-independent part of the pipeline for one image, computed once and reused."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

from grounded_sam.sam.everything import EverythingSettings, Proposals
from grounded_sam.sam.predictor import ImageEmbedding

__all__ = ["BoxDecodes", "ImageIndex"]

_FORMAT_VERSION = 1


@dataclass
class BoxDecodes:
    """SAM's output for the proposals' box prompts at one refine level (filled lazily).

    Attributes:
        low_res_logits: (N, L, L) float32 decoder logits of each proposal's box prompt.
        iou: (N,) float32 SAM's predicted IoU of those masks.
        done: (N,) bool, which rows have been decoded.
    """

    low_res_logits: torch.Tensor
    iou: torch.Tensor
    done: torch.Tensor


@dataclass
class ImageIndex:
    """Everything about an image that does not depend on the phrase.

    Build it with :meth:`grounded_sam.GroundedSAM.index`; answer any number of phrases with
    :meth:`grounded_sam.GroundedSAM.query` without running the SAM image encoder, the grid
    decoding or the CLIP image tower again.

    Attributes:
        image: (H, W, 3) uint8 RGB, the image as indexed.
        embedding: SAM's image embedding of the whole image.
        proposals: Class-agnostic SAM proposals (low resolution).
        region_embeddings: (N, D) L2-normalised CLIP embeddings of the proposals' crops.
        frame_masks: (N, h, w) bool proposal masks in a low-res frame of the whole image
            (used for point filters and mask NMS).
        settings: The proposal settings used.
        model_ids: Which SAM / CLIP models produced it (an index only fits those models).
        box_decodes: Box re-prompts of the proposals by refine level, decoded at most once
            per region (see :mod:`grounded_sam.grounding.boxes`).
    """

    image: np.ndarray
    embedding: ImageEmbedding
    proposals: Proposals
    region_embeddings: torch.Tensor
    frame_masks: torch.Tensor
    settings: EverythingSettings
    model_ids: tuple[str, str] = ("", "")
    box_decodes: dict[int, BoxDecodes] = field(default_factory=dict)

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of the image."""
        return self.embedding.original_size

    def __len__(self) -> int:
        return len(self.proposals)

    @property
    def nbytes(self) -> int:
        """Bytes held by the index's arrays (image, embedding, proposals, cached decodes)."""
        tensors = [
            self.embedding.embeddings,
            self.region_embeddings,
            self.frame_masks,
            *(v for v in vars(self.proposals).values() if torch.is_tensor(v)),
            *(t for d in self.box_decodes.values() for t in vars(d).values()),
        ]
        return int(self.image.nbytes) + sum(t.numel() * t.element_size() for t in tensors)

    def save(self, path: str | Path) -> Path:
        """Write the index to one file (tensors only; loads with ``weights_only=True``).

        Args:
            path: Destination file, conventionally ``*.gsindex``.

        Returns:
            The path written.
        """
        path = Path(path)
        p = self.proposals
        blob = {
            "version": _FORMAT_VERSION,
            "image": torch.from_numpy(self.image),
            "embeddings": self.embedding.embeddings.cpu(),
            "original_size": list(self.embedding.original_size),
            "input_size": list(self.embedding.input_size),
            "region_embeddings": self.region_embeddings.cpu(),
            "frame_masks": self.frame_masks.cpu(),
            "settings": {f.name: getattr(self.settings, f.name) for f in fields(self.settings)},
            "model_ids": list(self.model_ids),
            "box_decodes": {
                str(level): {k: v.cpu() for k, v in vars(d).items()}
                for level, d in self.box_decodes.items()
            },
            "proposals": {
                "low_res_logits": p.low_res_logits.cpu(),
                "crop_index": p.crop_index.cpu(),
                "crop_boxes": p.crop_boxes.cpu(),
                "crop_input_sizes": [list(s) for s in p.crop_input_sizes],
                "boxes": p.boxes.cpu(),
                "predicted_iou": p.predicted_iou.cpu(),
                "stability_score": p.stability_score.cpu(),
                "point_coords": p.point_coords.cpu(),
                "low_res_size": p.low_res_size,
                "target_length": p._target_length,
            },
        }
        tmp = path.with_name(path.name + ".tmp")
        torch.save(blob, tmp)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str = "cpu") -> ImageIndex:
        """Read an index written by :meth:`save`.

        Args:
            path: The file.
            device: Where to put its tensors (the device of the models that will query it).

        Returns:
            The index.

        Raises:
            FileNotFoundError: No such file.
            ValueError: The file is not an index of this version.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"Index file not found: {path}")
        try:
            blob = torch.load(path, map_location=device, weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unpickling failure means "not an index"
            raise ValueError(f"{path} is not a grounded_sam index file ({exc}).") from exc
        if not isinstance(blob, dict) or blob.get("version") != _FORMAT_VERSION:
            raise ValueError(
                f"{path} is not a grounded_sam index file of version {_FORMAT_VERSION}."
            )
        pr = blob["proposals"]
        original_size = tuple(blob["original_size"])
        proposals = Proposals(
            low_res_logits=pr["low_res_logits"],
            crop_index=pr["crop_index"],
            crop_boxes=pr["crop_boxes"],
            crop_input_sizes=[tuple(s) for s in pr["crop_input_sizes"]],
            boxes=pr["boxes"],
            predicted_iou=pr["predicted_iou"],
            stability_score=pr["stability_score"],
            point_coords=pr["point_coords"],
            original_size=original_size,
            low_res_size=pr["low_res_size"],
            _target_length=pr["target_length"],
        )
        return cls(
            image=blob["image"].numpy(),
            embedding=ImageEmbedding(
                embeddings=blob["embeddings"],
                original_size=original_size,
                input_size=tuple(blob["input_size"]),
            ),
            proposals=proposals,
            region_embeddings=blob["region_embeddings"],
            frame_masks=blob["frame_masks"],
            settings=EverythingSettings(**blob["settings"]),
            model_ids=tuple(blob["model_ids"]),
            box_decodes={
                int(level): BoxDecodes(**d) for level, d in blob.get("box_decodes", {}).items()
            },
        )
