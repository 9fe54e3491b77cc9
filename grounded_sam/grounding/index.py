"""The phrase-independent part of the pipeline for one image, computed once and reused.

Thread safety: an :class:`ImageIndex` is a frozen dataclass (assigning an attribute raises
:class:`dataclasses.FrozenInstanceError`) and nothing in it is written after it is built,
except its :class:`BoxDecodeCache`: the box re-prompt decodes of its proposals, filled
lazily by queries. That cache owns a lock; rows are written once (the first writer wins,
a row marked done never changes again) and read under the lock, so readers never see a
half-written row. One index may therefore be queried, saved and measured (:attr:`nbytes`)
from any number of threads at once. The arrays and tensors themselves are not copied: do
not write into ``index.image`` or the tensors of an index you share.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from grounded_sam.grounding.index_file import FORMAT_VERSION, read_index_fields
from grounded_sam.sam.everything import EverythingSettings
from grounded_sam.sam.predictor import ImageEmbedding
from grounded_sam.sam.proposals import Proposals

__all__ = [
    "BoxDecodeCache",
    "BoxDecodes",
    "ImageIndex",
    "expected_encoder_shapes",
    "weights_fingerprint",
]


@dataclass(frozen=True)
class BoxDecodes:
    """SAM's output for the proposals' box prompts at one refine level.

    Inside a :class:`BoxDecodeCache` the tensors are filled row by row under its lock; what
    :meth:`BoxDecodeCache.snapshot` returns are copies nobody writes into.

    Attributes:
        low_res_logits: (N, L, L) float32 decoder logits of each proposal's box prompt.
        iou: (N,) float32 SAM's predicted IoU of those masks.
        done: (N,) bool, which rows have been decoded.
    """

    low_res_logits: torch.Tensor
    iou: torch.Tensor
    done: torch.Tensor

    @property
    def nbytes(self) -> int:
        """Bytes of the three tensors."""
        return sum(t.numel() * t.element_size() for t in (self.low_res_logits, self.iou, self.done))


#: ``decode(boxes (M, 4) xyxy) -> (low_res_logits (M, L, L), iou (M,))``.
Decoder = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class BoxDecodeCache:
    """The lazily filled part of an index: box re-prompt decodes per refine level.

    Thread safety: every access takes the cache's lock. Decoding runs outside the lock, so
    two threads asking for the same missing rows may both decode them (identically: the
    decoder is deterministic for one embedding and box), and only the first result is
    written; a row marked done never changes. Gathered rows are copies, taken under the
    lock, so a reader never sees a half-written row.

    Args:
        levels: Decodes to start from, by refine level (e.g. read from a file); kept as
            given (the cache owns them from then on).
    """

    def __init__(self, levels: Mapping[int, BoxDecodes] | None = None) -> None:
        self._lock = threading.Lock()
        self._levels: dict[int, BoxDecodes] = dict(levels or {})

    def rows(
        self,
        refine: int,
        regions: torch.Tensor,
        boxes: torch.Tensor,
        side: int,
        decode: Decoder,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The decodes of some rows at one refine level, decoding those not done before.

        Args:
            refine: The refine level (the key).
            regions: (M,) long row indices (repeats allowed).
            boxes: (N, 4) xyxy boxes of all rows (the level is N rows, on their device).
            side: L, the low-res mask side.
            decode: Decodes the boxes of the missing rows (called without the lock held).

        Returns:
            ``(low_res_logits (M, L, L), iou (M,))`` copies, in the order of ``regions``.
        """
        with self._lock:
            level = self._level(refine, boxes, side)
            regions = regions.to(level.done.device, torch.long)
            missing = torch.unique(regions[~level.done[regions]])
        if missing.numel():
            logits, iou = decode(boxes[missing])
            with self._lock:
                keep = ~level.done[missing]  # another thread may have written some since
                new, keep = missing[keep], keep.to(logits.device)
                level.low_res_logits[new] = logits[keep].to(level.low_res_logits.device)
                level.iou[new] = iou[keep].to(level.iou.device)
                level.done[new] = True
        with self._lock:
            return level.low_res_logits[regions], level.iou[regions]

    def _level(self, refine: int, boxes: torch.Tensor, side: int) -> BoxDecodes:
        """The level's tensors, allocated (all rows not done) on first use; lock held."""
        level = self._levels.get(refine)
        if level is None:
            n, device = boxes.shape[0], boxes.device
            level = BoxDecodes(
                low_res_logits=torch.zeros(n, side, side, device=device),
                iou=torch.zeros(n, device=device),
                done=torch.zeros(n, dtype=torch.bool, device=device),
            )
            self._levels[refine] = level
        return level

    def snapshot(self) -> dict[int, BoxDecodes]:
        """Copies of every level's tensors, by refine level (consistent: taken under the lock)."""
        with self._lock:
            return {
                k: BoxDecodes(d.low_res_logits.clone(), d.iou.clone(), d.done.clone())
                for k, d in self._levels.items()
            }

    @property
    def nbytes(self) -> int:
        """Bytes held by the cached decodes (a level holds all N rows once it is first used)."""
        with self._lock:
            return sum(d.nbytes for d in self._levels.values())


@dataclass(frozen=True, eq=False)
class ImageIndex:
    """Everything about an image that does not depend on the phrase (frozen once built).

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
        weights_fingerprint: :func:`weights_fingerprint` of those models ("" if unknown).
        box_cache: The box re-prompts of the proposals by refine level, filled lazily and
            thread-safely (see :mod:`grounded_sam.grounding.boxes`). ``dataclasses.replace``
            shares it: give a new ``BoxDecodeCache()`` when replacing the embedding or the
            proposals.

    Equality and hashing are by identity (``eq=False``): an index holds tensors, and a
    store or a cache may key on it.
    """

    image: np.ndarray
    embedding: ImageEmbedding
    proposals: Proposals
    region_embeddings: torch.Tensor
    frame_masks: torch.Tensor
    settings: EverythingSettings
    model_ids: tuple[str, str] = ("", "")
    weights_fingerprint: str = ""
    box_cache: BoxDecodeCache = field(default_factory=BoxDecodeCache, repr=False)

    @property
    def box_decodes(self) -> dict[int, BoxDecodes]:
        """Copies of the cached box re-prompts by refine level (see :class:`BoxDecodeCache`)."""
        return self.box_cache.snapshot()

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of the image."""
        return self.embedding.original_size

    def __len__(self) -> int:
        return len(self.proposals)

    @property
    def nbytes(self) -> int:
        """Bytes held by the index's arrays.

        The image, the embedding with its encoder features and decoder context
        (:attr:`ImageEmbedding.nbytes`), the proposals, the region embeddings, the frame
        masks and the cached box decodes: what a byte-bounded store holds per index.
        """
        tensors = [
            self.region_embeddings,
            self.frame_masks,
            *(v for v in vars(self.proposals).values() if torch.is_tensor(v)),
        ]
        arrays = int(self.image.nbytes) + sum(t.numel() * t.element_size() for t in tensors)
        return arrays + self.embedding.nbytes + self.box_cache.nbytes

    def check_fits(self, model_ids: tuple[str, str], fingerprint: str) -> None:
        """Refuse to be queried by models other than those that built this index.

        The weights fingerprints decide when both are known (the same weights under another
        path are fine); otherwise the model ids are compared when both are known.

        Args:
            model_ids: (sam, clip) ids of the querying engine.
            fingerprint: :func:`weights_fingerprint` of the querying engine's models.

        Raises:
            ValueError: The index was built with other models (the message names both).
        """
        built = f"SAM {self.model_ids[0] or '?'} + CLIP {self.model_ids[1] or '?'}"
        here = f"SAM {model_ids[0] or '?'} + CLIP {model_ids[1] or '?'}"
        if self.weights_fingerprint and fingerprint:
            if self.weights_fingerprint != fingerprint:
                raise ValueError(
                    f"This index was built with other model weights ({built}, fingerprint "
                    f"{self.weights_fingerprint[:12]}) than this engine's ({here}, fingerprint "
                    f"{fingerprint[:12]}); its proposals and CLIP embeddings would give wrong "
                    "results. Index the image again with this engine."
                )
            return
        if all(self.model_ids) and all(model_ids) and tuple(self.model_ids) != tuple(model_ids):
            raise ValueError(
                f"This index was built with {built}, but this engine uses {here}. Index the "
                "image again with this engine."
            )

    def save(self, path: str | Path) -> Path:
        """Write the index to one file (tensors only; loads with ``weights_only=True``).

        Args:
            path: Destination file, conventionally ``*.gsindex``.

        Returns:
            The path written.
        """
        path = Path(path)
        p = self.proposals
        decodes = self.box_cache.snapshot()
        blob = {
            "version": FORMAT_VERSION,
            "image": torch.from_numpy(self.image),
            "embeddings": self.embedding.embeddings.cpu(),
            "features": [f.cpu() for f in self.embedding.features],  # HQ-SAM / SAM 2
            "original_size": list(self.embedding.original_size),
            "input_size": list(self.embedding.input_size),
            "region_embeddings": self.region_embeddings.cpu(),
            "frame_masks": self.frame_masks.cpu(),
            "settings": {f.name: getattr(self.settings, f.name) for f in fields(self.settings)},
            "model_ids": list(self.model_ids),
            "box_decodes": {
                str(level): {k: getattr(d, k).cpu() for k in ("low_res_logits", "iou", "done")}
                for level, d in decodes.items()
            },
            "weights_fingerprint": self.weights_fingerprint,
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
                "target_length": p.frame.target_length,
                "upscale": p.frame.upscale,  # absent in older files: "pad_crop"
            },
        }
        tmp = path.with_name(path.name + ".tmp")
        torch.save(blob, tmp)
        tmp.replace(path)
        return path

    @classmethod
    def load(
        cls,
        path: str | Path,
        device: torch.device | str = "cpu",
        predictor: Any = None,
        region_width: int | None = None,
    ) -> ImageIndex:
        """Read an index written by :meth:`save`, checking every field before it is used.

        Nothing in the file is trusted (see :mod:`grounded_sam.grounding.index_file`): the
        archive's size, every tensor's claimed size and layout, dtype and shape are checked
        before any tensor is read, then the values; with ``predictor`` / ``region_width``
        the index is also checked against the models that will query it
        (:meth:`check_models`).

        The embedding's decoder context (the prompt-independent decoder work, see
        :class:`~grounded_sam.sam.types.DecoderContext`) is not saved; it is rebuilt here when
        ``predictor`` is given, else each decode of the loaded index builds its own.

        Args:
            path: The file.
            device: Where to put its tensors (the device of the models that will query it).
            predictor: The SAM predictor that will query it (``predictor.prepare``), or None.
            region_width: The querying CLIP's embedding width (``scorer.embed_dim``), or None.

        Returns:
            The index.

        Raises:
            FileNotFoundError: No such file.
            ValueError: The file is not an index of this version, a field is invalid, or it
                does not fit ``predictor`` / ``region_width`` (the message names the file and
                the field).
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"Index file not found: {path}")
        kwargs = read_index_fields(path, device)
        decodes = {
            level: BoxDecodes(low_res_logits=logits, iou=iou, done=done)
            for level, (logits, iou, done) in kwargs.pop("box_decodes").items()
        }
        index = cls(**kwargs, box_cache=BoxDecodeCache(decodes))
        try:
            index.check_models(predictor, region_width)
        except ValueError as exc:
            raise ValueError(f"{path} does not fit this engine: {exc}") from None
        if predictor is None:
            return index
        return replace(index, embedding=predictor.prepare(index.embedding))

    def check_models(self, predictor: Any = None, region_width: int | None = None) -> None:
        """Refuse to be queried by models whose tensors this index's do not fit.

        Checks the SAM embedding (channels, side), every encoder feature the predictor's
        family needs (count and shape), ``input_size`` under the predictor's transform, and
        the region-embedding width against the CLIP's (cheap: shapes only).

        Args:
            predictor: The querying SAM predictor, or None.
            region_width: The querying CLIP's embedding width, or None.

        Raises:
            ValueError: A field that does not fit (the message names it).
        """
        _check_models(self.embedding, self.region_embeddings, predictor, region_width)


# -- against the loading engine's models ----------------------------------------------------


def expected_encoder_shapes(
    predictor: Any,
) -> tuple[tuple[int, ...] | None, tuple[tuple[int, ...], ...] | None]:
    """What ``predictor.encode`` gives for any image: embedding and feature shapes.

    Each family's predictor says (``encoder_shapes``, read from the model without an encoder
    pass).

    Returns:
        ``(embedding shape or None, feature shapes or None)``: None where the predictor does
        not say (a stand-in model, or features of a model laid out otherwise: then only their
        count is checked).
    """
    shapes = getattr(predictor, "encoder_shapes", None)
    return (None, None) if shapes is None else shapes()


def _check_models(
    embedding: ImageEmbedding,
    region_embeddings: torch.Tensor,
    predictor: Any = None,
    region_width: int | None = None,
) -> None:
    """Refuse an index that the loading engine's models cannot query.

    Args:
        embedding: The index's SAM embedding.
        region_embeddings: (N, D) its CLIP region embeddings.
        predictor: The engine's SAM predictor, or None (SAM checks skipped).
        region_width: The engine's CLIP embedding width D, or None (not checked).

    Raises:
        ValueError: A field that does not fit (the message names it and what was expected).
    """
    n, width = int(region_embeddings.shape[0]), int(region_embeddings.shape[-1])
    if region_width is not None and n and width != region_width:
        raise ValueError(
            f"field 'region_embeddings' is {width} wide, but this engine's CLIP embeds "
            f"{region_width} values: the index was built with another CLIP model"
        )
    if predictor is None:
        return
    family = getattr(predictor, "family", None)
    count = getattr(family, "encoder_features", None)
    if count is not None and len(embedding.features) != count:
        raise ValueError(
            f"field 'features' holds {len(embedding.features)} encoder feature map(s), and "
            f"this SAM family's decoder needs {count}: {family.features_doc}"
        )
    for i, feature in enumerate(embedding.features):
        if feature.dtype != embedding.embeddings.dtype:
            raise ValueError(
                f"field 'features[{i}]' is {feature.dtype} but the embedding is "
                f"{embedding.embeddings.dtype}: the encoder gives both in the model's dtype"
            )
    emb_shape, feat_shapes = expected_encoder_shapes(predictor)
    got = tuple(embedding.embeddings.shape)
    if emb_shape is not None and got != emb_shape:
        raise ValueError(
            f"field 'embeddings' has shape {got}, but this SAM model's embedding is {emb_shape}"
        )
    for i, want in enumerate(feat_shapes or ()):
        got = tuple(embedding.features[i].shape)
        if got != want:
            raise ValueError(
                f"field 'features[{i}]' has shape {got}, but this SAM model's is {want}"
            )
    transform = getattr(predictor, "transform", None)
    if transform is not None and hasattr(transform, "input_size"):
        want = tuple(transform.input_size(embedding.original_size))
        if tuple(embedding.input_size) != want:
            raise ValueError(
                f"field 'input_size' is {tuple(embedding.input_size)}, but this SAM model "
                f"resizes an image of {embedding.original_size} to {want}"
            )


def weights_fingerprint(*models: object) -> str:
    """A short fingerprint of model weights, to tell whether an index fits an engine.

    For every tensor of each model's ``state_dict`` the name, the shape and up to 256
    evenly strided values (rounded to float16, so a float32 and a float16 copy of the same
    weights agree) are hashed. Any retraining or other checkpoint changes it; it costs
    milliseconds even for ViT-H.

    Args:
        *models: ``torch.nn.Module`` objects; None and non-modules are skipped.

    Returns:
        A hex SHA-256 digest, or ``""`` when no model had weights.
    """
    digest = hashlib.sha256()
    found = False
    for model in models:
        if not isinstance(model, torch.nn.Module):
            continue
        for name, tensor in model.state_dict().items():
            if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
                continue
            found = True
            flat = tensor.detach().reshape(-1)
            step = max(1, flat.numel() // 256)
            sample = flat[::step][:256].to("cpu", torch.float16).numpy()
            digest.update(f"{name}:{tuple(tensor.shape)};".encode())
            digest.update(sample.tobytes())
    return digest.hexdigest() if found else ""
