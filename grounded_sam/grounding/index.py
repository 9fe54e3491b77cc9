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

from grounded_sam import limits
from grounded_sam.sam.everything import EverythingSettings
from grounded_sam.sam.predictor import ImageEmbedding
from grounded_sam.sam.proposals import UPSCALE_MODES, MaskFrame, Proposals

__all__ = ["BoxDecodeCache", "BoxDecodes", "ImageIndex", "weights_fingerprint"]

_FORMAT_VERSION = 2
#: Older versions still read (version 1 has no weights fingerprint: only ids are compared).
_READABLE_VERSIONS = (1, 2)


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
            "version": _FORMAT_VERSION,
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
        cls, path: str | Path, device: torch.device | str = "cpu", predictor: Any = None
    ) -> ImageIndex:
        """Read an index written by :meth:`save`.

        The embedding's decoder context (the prompt-independent decoder work, see
        :class:`~grounded_sam.sam.types.DecoderContext`) is not saved; it is rebuilt here when
        ``predictor`` is given, else each decode of the loaded index builds its own.

        Args:
            path: The file.
            device: Where to put its tensors (the device of the models that will query it).
            predictor: The SAM predictor that will query it (``predictor.prepare``), or None.

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
        if not isinstance(blob, dict) or blob.get("version") not in _READABLE_VERSIONS:
            raise ValueError(
                f"{path} is not a grounded_sam index file of version {_FORMAT_VERSION}."
            )
        try:
            index = _from_blob(cls, blob)
        except ValueError as exc:
            raise ValueError(f"{path} is not a valid index file: {exc}") from None
        if predictor is None:
            return index
        return replace(index, embedding=predictor.prepare(index.embedding))


# -- reading a file: every field checked before use ------------------------------------------

#: Tensor fields: where, dtype family, shape (ints are exact sizes, names must agree across
#: fields). Extend this table when a field is added to the file.
_TENSOR_FIELDS: dict[tuple[str, ...], tuple[str, tuple[int | str, ...]]] = {
    ("image",): ("uint8", ("H", "W", 3)),
    ("embeddings",): ("float", (1, "C", "E", "E")),
    ("region_embeddings",): ("float", ("N", "D")),
    ("frame_masks",): ("bool", ("N", "fh", "fw")),
    ("proposals", "low_res_logits"): ("float", ("N", "L", "L")),
    ("proposals", "crop_index"): ("int", ("N",)),
    ("proposals", "crop_boxes"): ("int", ("K", 4)),
    ("proposals", "boxes"): ("float", ("N", 4)),
    ("proposals", "predicted_iou"): ("float", ("N",)),
    ("proposals", "stability_score"): ("float", ("N",)),
    ("proposals", "point_coords"): ("float", ("N", 2)),
}

#: Upper bounds of the named sizes (anything larger is a crafted or corrupt file).
_SIZE_BOUNDS: dict[str, int] = {
    "H": limits.MAX_IMAGE_SIDE,
    "W": limits.MAX_IMAGE_SIDE,
    "C": 4096,
    "E": 1024,
    "N": 100_000,
    "D": 8192,
    "fh": 4096,
    "fw": 4096,
    "L": 4096,
    "K": 4**limits.MAX_CROP_N_LAYERS * 2,
}

_DTYPES = {
    "uint8": (torch.uint8,),
    "bool": (torch.bool,),
    "int": (torch.int64, torch.int32, torch.int16, torch.uint8),
    "float": (torch.float32, torch.float16, torch.bfloat16, torch.float64),
}


def _get(blob: Mapping[str, Any], where: tuple[str, ...]) -> Any:
    node: Any = blob
    for i, key in enumerate(where):
        if not isinstance(node, Mapping) or key not in node:
            raise ValueError(f"field {'.'.join(where[: i + 1])!r} is missing")
        node = node[key]
    return node


def _check_tensors(blob: Mapping[str, Any]) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for where, (kind, shape) in _TENSOR_FIELDS.items():
        name = ".".join(where)
        value = _get(blob, where)
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"field {name!r} must be a tensor, got {type(value).__name__}")
        if value.dtype not in _DTYPES[kind]:
            raise ValueError(f"field {name!r} must be a {kind} tensor, got {value.dtype}")
        if value.ndim != len(shape):
            raise ValueError(
                f"field {name!r} must have {len(shape)} dimensions, got shape {tuple(value.shape)}"
            )
        for dim, (want, got) in enumerate(zip(shape, value.shape, strict=True)):
            got = int(got)
            if isinstance(want, int):
                if got != want:
                    raise ValueError(
                        f"field {name!r} must have size {want} in dimension {dim}, got shape "
                        f"{tuple(value.shape)}"
                    )
            elif want in sizes and sizes[want] != got:
                raise ValueError(
                    f"field {name!r} has {got} for size {want} but another field has {sizes[want]}"
                )
            else:
                if got > _SIZE_BOUNDS[want]:
                    raise ValueError(
                        f"field {name!r} has size {got} for {want}, above the bound "
                        f"{_SIZE_BOUNDS[want]}"
                    )
                sizes[want] = got
        if kind == "float" and value.numel() and not torch.isfinite(value).all():
            raise ValueError(f"field {name!r} holds NaN or infinite values")
    if sizes["H"] * sizes["W"] > limits.MAX_IMAGE_PIXELS:
        raise ValueError(
            f"the image is {sizes['W']}x{sizes['H']}, above {limits.MAX_IMAGE_PIXELS:,} pixels"
        )
    return sizes


def _int_pair(blob: Mapping[str, Any], where: tuple[str, ...], high: int) -> tuple[int, int]:
    value = _get(blob, where)
    name = ".".join(where)
    if (
        not isinstance(value, (list, tuple))
        or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        or not all(1 <= v <= high for v in value)
    ):
        raise ValueError(f"field {name!r} must be two integers in [1, {high}], got {value!r}")
    return int(value[0]), int(value[1])


def _int(blob: Mapping[str, Any], where: tuple[str, ...], low: int, high: int) -> int:
    value = _get(blob, where)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(
            f"field {'.'.join(where)!r} must be an integer in [{low}, {high}], got {value!r}"
        )
    return value


def _features(blob: Mapping[str, Any]) -> tuple[torch.Tensor, ...]:
    """The extra encoder features of HQ-SAM / SAM 2 (absent or empty for SAM)."""
    value = blob.get("features", [])
    if not isinstance(value, (list, tuple)) or len(value) > 4:
        raise ValueError("field 'features' must be a list of at most 4 tensors")
    for i, tensor in enumerate(value):
        if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
            raise ValueError(f"field 'features[{i}]' must be a float tensor")
        if tensor.ndim != 4 or tensor.shape[0] != 1 or tensor.numel() > 2**26:
            raise ValueError(
                f"field 'features[{i}]' must be (1, ...) 4-d and at most 2**26 values, got "
                f"shape {tuple(tensor.shape)}"
            )
        if not torch.isfinite(tensor).all():
            raise ValueError(f"field 'features[{i}]' holds NaN or infinite values")
    return tuple(value)


def _from_blob(cls: type[ImageIndex], blob: Mapping[str, Any]) -> ImageIndex:
    """Build an index from a loaded file, validating every field (ValueError names it)."""
    sizes = _check_tensors(blob)
    original_size = _int_pair(blob, ("original_size",), limits.MAX_IMAGE_SIDE)
    if original_size != (sizes["H"], sizes["W"]):
        raise ValueError(
            f"field 'original_size' is {original_size} but the stored image is "
            f"{(sizes['H'], sizes['W'])}"
        )
    target = _int(blob, ("proposals", "target_length"), 1, 4096)
    input_size = _int_pair(blob, ("input_size",), target)
    if _int(blob, ("proposals", "low_res_size"), 1, 4096) != sizes["L"]:
        raise ValueError("field 'proposals.low_res_size' does not match the stored logits")
    crop_sizes = _get(blob, ("proposals", "crop_input_sizes"))
    if not isinstance(crop_sizes, (list, tuple)) or len(crop_sizes) != sizes["K"]:
        raise ValueError(f"field 'proposals.crop_input_sizes' must list {sizes['K']} (h, w) pairs")
    crop_input_sizes = [_int_pair({"s": s}, ("s",), target) for s in crop_sizes]
    pr = blob["proposals"]
    if sizes["N"] and (
        int(pr["crop_index"].min()) < 0 or int(pr["crop_index"].max()) >= sizes["K"]
    ):
        raise ValueError("field 'proposals.crop_index' refers to crops that are not stored")
    settings = _get(blob, ("settings",))
    if not isinstance(settings, Mapping) or not all(isinstance(k, str) for k in settings):
        raise ValueError("field 'settings' must be a mapping of setting names to values")
    known = {f.name for f in fields(EverythingSettings)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ValueError(f"field 'settings' has unknown settings {unknown}")
    try:
        everything = EverythingSettings(**settings)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"field 'settings' is invalid: {exc}") from None
    model_ids = _get(blob, ("model_ids",))
    if (
        not isinstance(model_ids, (list, tuple))
        or len(model_ids) != 2
        or not all(isinstance(m, str) for m in model_ids)
    ):
        raise ValueError(f"field 'model_ids' must be two strings, got {model_ids!r}")
    fingerprint = blob.get("weights_fingerprint", "")
    if not isinstance(fingerprint, str) or len(fingerprint) > 128:
        raise ValueError("field 'weights_fingerprint' must be a short string")
    proposals = Proposals(
        low_res_logits=pr["low_res_logits"].float(),
        crop_index=pr["crop_index"].long(),
        crop_boxes=pr["crop_boxes"].long(),
        crop_input_sizes=crop_input_sizes,
        boxes=pr["boxes"].float(),
        predicted_iou=pr["predicted_iou"].float(),
        stability_score=pr["stability_score"].float(),
        point_coords=pr["point_coords"].float(),
        original_size=original_size,
        frame=_mask_frame(blob, target, sizes["L"]),
    )
    return cls(
        image=blob["image"].numpy(),
        embedding=ImageEmbedding(
            embeddings=blob["embeddings"],
            original_size=original_size,
            input_size=input_size,
            features=_features(blob),
        ),
        proposals=proposals,
        region_embeddings=blob["region_embeddings"],
        frame_masks=blob["frame_masks"],
        settings=everything,
        model_ids=(model_ids[0], model_ids[1]),
        weights_fingerprint=fingerprint,
        box_cache=BoxDecodeCache(_box_decodes(blob, sizes)),
    )


def _mask_frame(blob: Mapping[str, Any], target: int, side: int) -> MaskFrame:
    """The proposals' frame; files written before it was saved were upscaled as SAM's."""
    upscale = blob["proposals"].get("upscale", "pad_crop")
    if upscale not in UPSCALE_MODES:
        raise ValueError(f"field 'proposals.upscale' must be one of {UPSCALE_MODES}")
    return MaskFrame(target_length=target, low_res_size=side, upscale=upscale)


def _box_decodes(blob: Mapping[str, Any], sizes: dict[str, int]) -> dict[int, BoxDecodes]:
    """The cached box re-prompts of a file (absent in older files), each tensor checked."""
    raw = blob.get("box_decodes", {})
    if not isinstance(raw, Mapping):
        raise ValueError("box_decodes is not a mapping")
    n, side = sizes["N"], sizes["L"]
    out: dict[int, BoxDecodes] = {}
    for level, d in raw.items():
        if not (isinstance(level, str) and level.isdigit() and int(level) <= 100):
            raise ValueError(f"box_decodes has a bad refine level {level!r}")
        if not isinstance(d, Mapping) or set(d) != {"low_res_logits", "iou", "done"}:
            raise ValueError(f"box_decodes[{level}] must have low_res_logits, iou and done")
        expected = {
            "low_res_logits": ((n, side, side), True),
            "iou": ((n,), True),
            "done": ((n,), False),
        }
        for key, (shape, is_float) in expected.items():
            t = d[key]
            ok = isinstance(t, torch.Tensor) and tuple(t.shape) == shape
            if ok:
                ok = t.is_floating_point() if is_float else t.dtype == torch.bool
            if not ok:
                kind = "float" if is_float else "bool"
                raise ValueError(f"box_decodes[{level}].{key} must be a {kind} {shape} tensor")
        out[int(level)] = BoxDecodes(
            low_res_logits=d["low_res_logits"].float(), iou=d["iou"].float(), done=d["done"]
        )
    return out


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
