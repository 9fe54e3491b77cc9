"""Reading an :class:`~grounded_sam.grounding.index.ImageIndex` file: no file is trusted.

A ``.gsindex`` file is a ``torch.save`` zip archive. It is read in stages, each cheaper than
the next, so that a crafted file is refused before it costs memory:

1. **The archive** (:func:`check_archive`): the members' uncompressed sizes are added up
   from the zip directory before anything is read, and refused above :data:`MAX_INDEX_BYTES`
   (a zip bomb would inflate there); compressed members are refused (``torch.save`` stores
   members uncompressed, so what is read is what is on disk).
2. **The tensors' layout**, loaded memory-mapped (``torch.load(mmap=True)``: storages are
   not read in yet): every tensor must lie inside its storage and not overlap itself (a
   stride-0 or expanded view claiming a huge shape on a small storage is refused), the
   claimed bytes of all tensors together are at most :data:`MAX_INDEX_BYTES`, and each
   field's dtype and shape is checked against ``_TENSOR_FIELDS`` / ``_SIZE_BOUNDS``.
3. Only then are the tensors **materialised** (copied off the map, onto the target device)
   and their values checked (finite floats, crop indices in range), and the plain fields
   (sizes, settings, ids) validated.
4. **Against the loading engine's models** (:meth:`ImageIndex.check_models
   <grounded_sam.grounding.index.ImageIndex.check_models>`, when the loader gives a
   predictor or a CLIP width): every encoder feature the SAM family needs, with the shapes
   its decoder takes, the embedding's channels and side, ``input_size`` under the model's
   transform, and the region-embedding width of the CLIP.

Each failure is one :class:`ValueError` naming the field; :meth:`ImageIndex.load` prefixes
the file's path.
"""

from __future__ import annotations

import logging
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch

from grounded_sam import limits
from grounded_sam.sam.everything import EverythingSettings
from grounded_sam.sam.predictor import ImageEmbedding
from grounded_sam.sam.proposals import UPSCALE_MODES, MaskFrame, Proposals
from grounded_sam.sam.transforms import Sam2Transform, SamTransform

__all__ = ["FORMAT_VERSION", "MAX_INDEX_BYTES", "READABLE_VERSIONS", "check_archive",
           "read_index_fields"]  # fmt: skip

logger = logging.getLogger(__name__)

FORMAT_VERSION = 2
#: Older versions still read (version 1 has no weights fingerprint: only ids are compared).
READABLE_VERSIONS = (1, 2)

# -- the largest legal index ------------------------------------------------------------------
#
# image: at most limits.MAX_IMAGE_PIXELS RGB uint8 pixels                      150 MB
# encoder outputs: the largest released model's are HQ-SAM ViT-H's embedding (256 x 64 x 64)
#   and early ViT features (64 x 64 x 1280), 24 MiB in float32 (SAM 2: 16 MiB); allowed with
#   ten-fold headroom                                                          256 MiB
# per proposal, at the released decoder geometry (L = 256 low-res logits, float32):
#   its low-res logits (256 KiB), its box re-prompts at every refine level 0..MAX_REFINE
#   (9 x 256 KiB + 5 B), its frame mask (at most L x L bool, 64 KiB), its CLIP region
#   embedding (at most 2048 float32, 8 KiB) and its boxes / scores / points (< 100 B)
#   -> about 2.6 MiB; for _MAX_PROPOSALS_AT_L256 = 1,000 proposals (ten times the engine's
#   default max_regions)                                                      ~2.6 GiB
# total ~3.0 GiB. Tiny test models have smaller L and so may hold more proposals: only the
# total is bounded, with _SIZE_BOUNDS bounding each dimension.
_IMAGE_BYTES = limits.MAX_IMAGE_PIXELS * 3
_ENCODER_BYTES = 256 * 2**20
_MAX_PROPOSALS_AT_L256 = 1_000
_PROPOSAL_BYTES = (1 + limits.MAX_REFINE + 1) * 256 * 256 * 4 + 256 * 256 + 2048 * 4 + 5 + 100
#: Bytes of the largest legal index (the tensors' claimed sizes and the archive, each).
MAX_INDEX_BYTES = _IMAGE_BYTES + _ENCODER_BYTES + _MAX_PROPOSALS_AT_L256 * _PROPOSAL_BYTES
#: Room for the pickled structure and the archive's small records on top of the tensors.
_ARCHIVE_SLACK = 16 * 2**20

#: Top-level fields of a file (any other is refused: it could only hide data).
_FIELDS = frozenset({
    "version", "image", "embeddings", "features", "original_size", "input_size",
    "region_embeddings", "frame_masks", "settings", "model_ids", "box_decodes",
    "weights_fingerprint", "proposals",
})  # fmt: skip

#: Keys of the ``proposals`` field that are read (others are dropped unread).
_PROPOSAL_KEYS = frozenset({
    "low_res_logits", "crop_index", "crop_boxes", "crop_input_sizes", "boxes", "predicted_iou",
    "stability_score", "point_coords", "low_res_size", "target_length", "upscale",
})  # fmt: skip

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


def _gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB"


# -- 1. the archive ---------------------------------------------------------------------------


def check_archive(path: Path) -> None:
    """Refuse a file that is not a ``torch.save`` archive or would inflate past the bound.

    Only the zip directory is read (no member is decompressed).

    Raises:
        ValueError: Not a zip archive, members adding up to more than :data:`MAX_INDEX_BYTES`
            uncompressed, or a compressed member.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ValueError(f"{path} is not a grounded_sam index file ({exc}).") from None
    total = sum(m.file_size for m in members)
    if total > MAX_INDEX_BYTES + _ARCHIVE_SLACK:
        raise ValueError(
            f"{path} would inflate to {_gb(total)}; an index is at most "
            f"{_gb(MAX_INDEX_BYTES + _ARCHIVE_SLACK)}: not a grounded_sam index file."
        )
    packed = [m.filename for m in members if m.compress_type != zipfile.ZIP_STORED]
    if packed:
        raise ValueError(
            f"{path} has compressed members ({packed[0]!r}); torch.save stores them "
            "uncompressed: not a grounded_sam index file."
        )


# -- 2. layout, before anything is read -------------------------------------------------------


def _tensors(node: Any, name: str) -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor in a loaded blob with its field name (``proposals.boxes``, ``features[0]``)."""
    if isinstance(node, torch.Tensor):
        yield name, node
    elif isinstance(node, Mapping):
        for key, value in node.items():
            yield from _tensors(value, f"{name}.{key}" if name else str(key))
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            yield from _tensors(value, f"{name}[{i}]")


def _check_layout(name: str, t: torch.Tensor) -> int:
    """Refuse a tensor that overlaps itself or reaches past its storage; its claimed bytes.

    A tensor we write is a dense (possibly permuted, e.g. channels-last) layout of its own
    storage. A stride-0 or expanded view, whose shape claims far more elements than its
    storage holds, would be materialised at the claimed size by the first operation on it.
    """
    if t.layout != torch.strided or t.is_quantized:
        raise ValueError(f"field {name!r} must be a plain dense tensor, got layout {t.layout}")
    claimed = t.numel() * t.element_size()
    if t.numel() == 0:
        return 0
    dims = sorted((s, n) for s, n in zip(t.stride(), t.shape, strict=True) if n > 1)
    span = 1  # elements covered by the dims seen so far (non-overlapping if each steps past)
    for stride, size in dims:
        if stride < span:
            raise ValueError(
                f"field {name!r} is a view whose elements overlap (strides {t.stride()}, shape "
                f"{tuple(t.shape)}, e.g. an expanded or stride-0 tensor); an index file holds "
                "dense tensors"
            )
        span = stride * (size - 1) + span
    end = (t.storage_offset() + span) * t.element_size()
    if t.storage_offset() < 0 or end > t.untyped_storage().nbytes() or claimed > end:
        raise ValueError(
            f"field {name!r} claims {claimed:,} bytes (shape {tuple(t.shape)}) but its storage "
            f"holds {t.untyped_storage().nbytes():,}"
        )
    return claimed


def _check_layouts(blob: Mapping[str, Any]) -> None:
    unknown = sorted(str(k) for k in blob if k not in _FIELDS)
    if unknown:
        raise ValueError(f"field {unknown[0]!r} is not an index field")
    total = sum(_check_layout(name, t) for name, t in _tensors(blob, ""))
    if total > MAX_INDEX_BYTES:
        raise ValueError(
            f"the tensors claim {_gb(total)}; an index is at most {_gb(MAX_INDEX_BYTES)}"
        )


def _get(blob: Mapping[str, Any], where: tuple[str, ...]) -> Any:
    node: Any = blob
    for i, key in enumerate(where):
        if not isinstance(node, Mapping) or key not in node:
            raise ValueError(f"field {'.'.join(where[: i + 1])!r} is missing")
        node = node[key]
    return node


def _check_shapes(blob: Mapping[str, Any]) -> dict[str, int]:
    """Every tensor field's dtype and shape (no value is read); the named sizes."""
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
    if sizes["H"] * sizes["W"] > limits.MAX_IMAGE_PIXELS:
        raise ValueError(
            f"the image is {sizes['W']}x{sizes['H']}, above {limits.MAX_IMAGE_PIXELS:,} pixels"
        )
    _check_feature_shapes(blob)
    return sizes


def _check_feature_shapes(blob: Mapping[str, Any]) -> None:
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


# -- 3. values, once materialised -------------------------------------------------------------


def _materialise(node: Any, device: torch.device | str) -> Any:
    """The blob with every tensor copied off the file map onto ``device`` (sizes are checked)."""
    if isinstance(node, torch.Tensor):
        return node.to(device, copy=True)
    if isinstance(node, dict):
        return {k: _materialise(v, device) for k, v in node.items()}
    if isinstance(node, list):
        return [_materialise(v, device) for v in node]
    if isinstance(node, tuple):
        return tuple(_materialise(v, device) for v in node)
    return node


def _known(blob: dict[str, Any]) -> dict[str, Any]:
    """The blob without proposal keys no reader uses (never materialised)."""
    proposals = blob["proposals"]
    return {**blob, "proposals": {k: v for k, v in proposals.items() if k in _PROPOSAL_KEYS}}


def _check_finite(blob: Mapping[str, Any]) -> None:
    """Float fields (and the encoder features) must hold finite values."""
    named = [(w, _get(blob, w)) for w, (kind, _) in _TENSOR_FIELDS.items() if kind == "float"]
    named += [((f"features[{i}]",), f) for i, f in enumerate(blob.get("features", []))]
    for where, tensor in named:
        if tensor.numel() and not torch.isfinite(tensor).all():
            raise ValueError(f"field {'.'.join(where)!r} holds NaN or infinite values")


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


def _check_input_size(input_size: tuple[int, int], original: tuple[int, int], target: int) -> None:
    """``input_size`` must be the resize of ``original`` into the ``target`` frame.

    SAM and HQ-SAM resize the longest side to ``target``; SAM 2 stretches to the square.
    """
    allowed = {t(target).input_size(original) for t in (SamTransform, Sam2Transform)}
    if input_size not in allowed:
        raise ValueError(
            f"field 'input_size' is {input_size}, but an image of {original} in a {target} "
            f"frame is resized to one of {sorted(allowed)}"
        )


def read_index_fields(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Read and validate an index file; the :class:`ImageIndex` fields it holds.

    Args:
        path: An existing file.
        device: Where to put the tensors.

    Returns:
        ``ImageIndex`` keyword arguments, with ``box_decodes`` (refine level ->
        ``(low_res_logits (N, L, L), iou (N,), done (N,))``) in place of ``box_cache``.

    Raises:
        ValueError: Not an index file (the message names the file), or an invalid field (the
            message names the file and the field).
    """
    check_archive(path)
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means "not an index"
        raise ValueError(f"{path} is not a grounded_sam index file ({exc}).") from exc
    if not isinstance(blob, dict) or blob.get("version") not in READABLE_VERSIONS:
        raise ValueError(f"{path} is not a grounded_sam index file of version {FORMAT_VERSION}.")
    try:
        _check_layouts(blob)
        _check_shapes(blob)
        blob = _materialise(_known(blob), device)
        return _fields(blob)
    except ValueError as exc:
        raise ValueError(f"{path} is not a valid index file: {exc}") from None


def _fields(blob: Mapping[str, Any]) -> dict[str, Any]:
    """The index's fields from a materialised blob, validating every value."""
    sizes = _check_shapes(blob)
    _check_finite(blob)
    original_size = _int_pair(blob, ("original_size",), limits.MAX_IMAGE_SIDE)
    if original_size != (sizes["H"], sizes["W"]):
        raise ValueError(
            f"field 'original_size' is {original_size} but the stored image is "
            f"{(sizes['H'], sizes['W'])}"
        )
    target = _int(blob, ("proposals", "target_length"), 1, 4096)
    input_size = _int_pair(blob, ("input_size",), target)
    _check_input_size(input_size, original_size, target)
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
    return {
        "image": blob["image"].numpy(),
        "embedding": ImageEmbedding(
            embeddings=blob["embeddings"],
            original_size=original_size,
            input_size=input_size,
            features=tuple(blob.get("features", [])),
        ),
        "proposals": proposals,
        "region_embeddings": blob["region_embeddings"],
        "frame_masks": blob["frame_masks"],
        "settings": everything,
        "model_ids": (model_ids[0], model_ids[1]),
        "weights_fingerprint": fingerprint,
        "box_decodes": _box_decodes(blob, sizes),
    }


def _mask_frame(blob: Mapping[str, Any], target: int, side: int) -> MaskFrame:
    """The proposals' frame; files written before it was saved were upscaled as SAM's."""
    upscale = blob["proposals"].get("upscale", "pad_crop")
    if upscale not in UPSCALE_MODES:
        raise ValueError(f"field 'proposals.upscale' must be one of {UPSCALE_MODES}")
    return MaskFrame(target_length=target, low_res_size=side, upscale=upscale)


def _box_decodes(
    blob: Mapping[str, Any], sizes: dict[str, int]
) -> dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """The cached box re-prompts of a file (absent in older files), each tensor checked."""
    raw = blob.get("box_decodes", {})
    if not isinstance(raw, Mapping):
        raise ValueError("box_decodes is not a mapping")
    n, side = sizes["N"], sizes["L"]
    out: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
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
        out[int(level)] = (d["low_res_logits"].float(), d["iou"].float(), d["done"])
    return out
