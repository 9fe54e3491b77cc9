"""The SAM family registry: one record per family, read by everything that cares which.

As segment_anything's ``sam_model_registry`` and open_clip's factory, one table says what a
family is: the ``model_type`` values of its ``config.json``, the transformers class that
loads it, its predictor, its frame geometry, its mask decoder's head strategy (for
:class:`~grounded_sam.sam.fast_decoder.FastMaskDecoder`), its ONNX exporter, its tiny random
model builder, the number of extra encoder features a kept embedding carries, and its short
names on the Hub. Readers: :mod:`~grounded_sam.sam.loading` (config check, aliases, messages),
:func:`~grounded_sam.sam.factory.create_predictor`, the predictors themselves (transform,
head, features), :mod:`~grounded_sam.deploy.onnx.exporter`, :mod:`~grounded_sam.sam.tiny`,
the CLI help (:func:`describe`) and the tests (every record is exercised).

Implementations that live above ``sam/`` or import this module (predictors, the ONNX
exporters, the tiny builders) are named as ``"module:attribute"`` strings and imported on
first use, as transformers' auto classes name their model classes: the registry imports only
the small modules it needs (transforms, heads), so there is no import cycle.

**Adding a family** is one new module plus one record:

1. write ``grounded_sam/sam/<family>.py`` with a :class:`~grounded_sam.sam.predictor.SamPredictor`
   subclass (``FAMILY = "<name>"``; override ``_image_encoder`` and ``_encoder_outputs``, and
   ``_model_mask_input`` if mask prompts are preprocessed), plus a
   :class:`~grounded_sam.sam.heads.DecoderHead` subclass if its decoder's tokens or upscaling
   differ from SAM's, and a transform if its frame differs;
2. add a :class:`SamFamily` record to :data:`FAMILIES` below (its ONNX exporter and tiny
   builder may come later: ``None`` until then).

Thread safety: the records are frozen and the table is a tuple; nothing here changes after
import.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from grounded_sam.sam.heads import HQ_HEAD, SAM2_HEAD, SAM_HEAD, DecoderHead
from grounded_sam.sam.transforms import Sam2Transform, SamTransform

__all__ = [
    "FAMILIES",
    "SAM3",
    "TEXT_GROUNDERS",
    "GrounderFamily",
    "SamFamily",
    "aliases",
    "describe",
    "for_decoder",
    "for_model",
    "for_model_type",
    "get",
    "grounder_for_model_type",
    "model_types",
    "names",
]


def _sam_frame(config: Any) -> SamTransform:
    """SAM / HQ-SAM: resize the longest side to the ViT's input side, pad the rest."""
    return SamTransform(int(config.vision_config.image_size))


def _sam2_frame(config: Any) -> SamTransform:
    """SAM 2: the image stretched to the prompt encoder's square input frame."""
    return Sam2Transform(int(config.prompt_encoder_config.image_size))


def _resolve(ref: str) -> Any:
    """``"package.module:attribute"`` -> the attribute (imported on first use)."""
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True)
class SamFamily:
    """One SAM family.

    Attributes:
        name: Registry name (``"sam"``, ``"sam_hq"``, ``"sam2"``).
        title: Human name used in messages (``"HQ-SAM"``).
        model_types: ``config.json`` ``model_type`` values of its checkpoints; the first is
            the family's own (the hub's SAM 2.1 repos say ``"sam2_video"``).
        model_class: transformers class that loads it (``"SamHQModel"``).
        predictor: ``"module:Class"`` of its :class:`~grounded_sam.sam.predictor.SamPredictor`.
        transform: ``transform(config)`` -> its frame geometry (a
            :class:`~grounded_sam.sam.transforms.SamTransform`).
        head: Its mask decoder's head strategy for the fast decoder.
        decoder_token: Name of a learned token only this family's mask decoder has (how a bare
            decoder module is recognised); None for SAM's (the fallback).
        encoder_features: Extra encoder feature maps a kept embedding carries for its decoder.
        features_doc: What those are, for messages.
        onnx: ``("module:write_graphs", "module:make_manifest")`` of its ONNX exporter, or
            None where there is none.
        tiny: ``"module:function"`` saving a tiny random model of it
            (``function(directory, seed=0, image_size=256) -> Path``), or None.
        aliases: Short names -> Hub ids of its released checkpoints.
        example_id: A Hub id shown in messages.
    """

    name: str
    title: str
    model_types: tuple[str, ...]
    model_class: str
    predictor: str
    transform: Callable[[Any], SamTransform]
    head: DecoderHead
    decoder_token: str | None
    encoder_features: int
    features_doc: str
    onnx: tuple[str, str] | None
    tiny: str | None
    aliases: Mapping[str, str] = field(default_factory=dict)
    example_id: str = ""

    def predictor_class(self) -> type:
        """The predictor class (imported on first use)."""
        return _resolve(self.predictor)

    def onnx_exporter(self) -> tuple[Callable, Callable]:
        """The family's ONNX exporter functions, imported on first use.

        Returns ``(write_graphs(model, folder, opset, encoder) -> files,
        make_manifest(model, spec, files, opset) -> dict)``.

        Raises:
            ValueError: The family has no ONNX exporter.
        """
        if self.onnx is None:
            raise ValueError(f"ONNX export is not available for {self.title} models yet.")
        return _resolve(self.onnx[0]), _resolve(self.onnx[1])

    def save_tiny(self, directory: str | Path, seed: int = 0, image_size: int = 256) -> Path:
        """Save a tiny random model of this family (see :mod:`grounded_sam.sam.tiny`).

        Raises:
            ValueError: The family has no tiny builder.
        """
        if self.tiny is None:
            raise ValueError(f"No tiny random {self.title} model builder.")
        return _resolve(self.tiny)(directory, seed=seed, image_size=image_size)


FAMILIES: tuple[SamFamily, ...] = (
    SamFamily(
        name="sam",
        title="SAM",
        model_types=("sam",),
        model_class="SamModel",
        predictor="grounded_sam.sam.predictor:SamPredictor",
        transform=_sam_frame,
        head=SAM_HEAD,
        decoder_token=None,
        encoder_features=0,
        features_doc="none (SAM's decoder takes the image embedding alone)",
        onnx=(
            "grounded_sam.deploy.onnx.sam:export_sam_graphs",
            "grounded_sam.deploy.onnx.sam:sam_manifest",
        ),
        tiny="grounded_sam.sam.tiny:save_tiny_sam",
        aliases=MappingProxyType(
            {
                "vit_b": "facebook/sam-vit-base",
                "vit-b": "facebook/sam-vit-base",
                "base": "facebook/sam-vit-base",
                "vit_l": "facebook/sam-vit-large",
                "vit-l": "facebook/sam-vit-large",
                "large": "facebook/sam-vit-large",
                "vit_h": "facebook/sam-vit-huge",
                "vit-h": "facebook/sam-vit-huge",
                "huge": "facebook/sam-vit-huge",
            }
        ),
        example_id="facebook/sam-vit-base",
    ),
    SamFamily(
        name="sam_hq",
        title="HQ-SAM",
        model_types=("sam_hq",),
        model_class="SamHQModel",
        predictor="grounded_sam.sam.hq:SamHQPredictor",
        transform=_sam_frame,
        head=HQ_HEAD,
        decoder_token="hq_token",
        encoder_features=1,
        features_doc="HQ-SAM's early ViT features",
        onnx=(
            "grounded_sam.deploy.onnx.hq:export_hq_graphs",
            "grounded_sam.deploy.onnx.hq:hq_manifest",
        ),
        tiny="grounded_sam.sam.tiny:save_tiny_sam_hq",
        # transformers ports of SysCV's checkpoints
        aliases=MappingProxyType(
            {
                "hq_vit_b": "syscv-community/sam-hq-vit-base",
                "hq_vit_l": "syscv-community/sam-hq-vit-large",
                "hq_vit_h": "syscv-community/sam-hq-vit-huge",
            }
        ),
        example_id="syscv-community/sam-hq-vit-base",
    ),
    SamFamily(
        name="sam2",
        title="SAM 2 / 2.1",
        # The hub's SAM 2.1 repos are saved by the video model; the image model loads them and
        # ignores the memory modules (transformers' _keys_to_ignore_on_load_unexpected).
        model_types=("sam2", "sam2_video"),
        model_class="Sam2Model",
        predictor="grounded_sam.sam.sam2:Sam2Predictor",
        transform=_sam2_frame,
        head=SAM2_HEAD,
        decoder_token="obj_score_token",
        encoder_features=2,
        features_doc="SAM 2's two high-resolution backbone levels",
        onnx=(
            "grounded_sam.deploy.onnx.sam2:export_sam2_graphs",
            "grounded_sam.deploy.onnx.sam2:sam2_manifest",
        ),
        tiny="grounded_sam.sam.tiny:save_tiny_sam2",
        # SAM 2.1 (Hiera encoders)
        aliases=MappingProxyType(
            {
                "sam2.1_t": "facebook/sam2.1-hiera-tiny",
                "sam2.1_s": "facebook/sam2.1-hiera-small",
                "sam2.1_b+": "facebook/sam2.1-hiera-base-plus",
                "sam2.1_l": "facebook/sam2.1-hiera-large",
            }
        ),
        example_id="facebook/sam2.1-hiera-tiny",
    ),
)
"""Every supported family, SAM first (the default)."""


@dataclass(frozen=True)
class GrounderFamily:
    """A checkpoint family that reads the text itself and is a grounder, not a SAM back-end.

    SAM 3 finds every instance of a phrase with its own text encoder and DETR-style decoder;
    it has no point-prompt mask decoder for the grid proposals and the box re-prompts of the
    CLIP path. So it is not a :class:`SamFamily` (the SAM-family readers above, the factory
    and the ONNX exporters never see it), but its checkpoints load through the same config-
    first loader (:mod:`grounded_sam.sam.loading`), and ``GroundedSAM.from_pretrained`` asks
    the record's :meth:`build_engine` for the whole engine instead of loading SAM and CLIP.

    **Adding a text-grounder family** is a module plus a record here, added to
    :data:`TEXT_GROUNDERS`: a back-end, a grounder implementing
    :class:`~grounded_sam.grounding.grounder.TextGrounder` (its own index, its refusals), and an
    ``engine`` function returning ``GroundedSAM``'s constructor arguments. Loading, the
    pipeline and the CLI find it through the registry; none of them names a family.

    Attributes:
        name: Registry name (``"sam3"``).
        title: Human name used in messages (``"SAM 3"``).
        model_types: ``config.json`` ``model_type`` values of its checkpoints (the Hub's
            ``facebook/sam3`` is saved by the video model, ``"sam3_video"``; the image model
            loads its detector and ignores the tracker).
        model_class: transformers class that loads it (``"Sam3Model"``).
        backend: ``"module:Class"`` of its back-end (loading the processor, vision features,
            the text-conditioned detector).
        grounder: ``"module:Class"`` of its grounder.
        engine: ``"module:function"`` loading a checkpoint of it into ``GroundedSAM``'s
            constructor arguments (see :meth:`build_engine`).
        encoder_features: Extra encoder feature maps a kept embedding carries (besides the
            level the DETR encoder reads).
        features_doc: What those are, for messages.
        tiny: ``"module:function"`` saving a tiny random model with its processor.
        aliases: Short names -> Hub ids of its released checkpoints.
        example_id: A Hub id shown in messages.
        gated: Its Hub repositories are gated (the licence must be accepted on the model page
            and the user logged in before anything downloads).
    """

    name: str
    title: str
    model_types: tuple[str, ...]
    model_class: str
    backend: str
    grounder: str
    engine: str
    encoder_features: int
    features_doc: str
    tiny: str | None
    aliases: Mapping[str, str] = field(default_factory=dict)
    example_id: str = ""
    gated: bool = False

    def backend_class(self) -> type:
        """The back-end class (imported on first use)."""
        return _resolve(self.backend)

    def grounder_class(self) -> type:
        """The grounder class (imported on first use)."""
        return _resolve(self.grounder)

    def build_engine(
        self,
        sam: str | os.PathLike,
        clip: str | None,
        device: Any,
        dtype: Any,
        compile: bool = False,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Load a checkpoint of this family: ``GroundedSAM``'s constructor arguments.

        Args:
            sam: The SAM spec (Hub id, alias or local folder) of a checkpoint of this family.
            clip: The CLIP spec the caller gave (the family decides whether it is used).
            device: A resolved ``torch.device``.
            dtype: A resolved ``torch.dtype``.
            compile: The caller's ``compile`` flag.
            **kwargs: The rest of the constructor's arguments.

        Returns:
            Keyword arguments of ``GroundedSAM(...)`` (``predictor``, ``scorer``,
            ``grounder``, ``refiner``, ``model_ids``, ...).

        Raises:
            grounded_sam.errors.ModelLoadError: The checkpoint cannot be loaded.
        """
        return _resolve(self.engine)(sam, clip, device, dtype, compile, **kwargs)

    def save_tiny(self, directory: str | Path, seed: int = 0, image_size: int = 112) -> Path:
        """Save a tiny random model of this family with its processor.

        Raises:
            ValueError: The family has no tiny builder.
        """
        if self.tiny is None:
            raise ValueError(f"No tiny random {self.title} model builder.")
        return _resolve(self.tiny)(directory, seed=seed, image_size=image_size)


SAM3 = GrounderFamily(
    name="sam3",
    title="SAM 3",
    model_types=("sam3", "sam3_video"),
    model_class="Sam3Model",
    backend="grounded_sam.sam.sam3:Sam3Backend",
    grounder="grounded_sam.grounding.sam3_grounder:Sam3Grounder",
    engine="grounded_sam.grounding.sam3_grounder:sam3_engine",
    encoder_features=2,
    features_doc="SAM 3's two finer FPN levels (4x and 2x the DETR encoder's)",
    tiny="grounded_sam.sam.sam3_tiny:save_tiny_sam3",
    aliases=MappingProxyType({"sam3": "facebook/sam3"}),
    example_id="facebook/sam3",
    gated=True,
)
"""SAM 3 (Meta, Nov 2025): native text grounding (see :mod:`grounded_sam.sam.sam3`)."""

TEXT_GROUNDERS: tuple[GrounderFamily, ...] = (SAM3,)
"""Checkpoint families that ground text themselves (no CLIP)."""


def grounder_for_model_type(model_type: str | None) -> GrounderFamily | None:
    """The text-grounding family whose checkpoints have this ``model_type`` (None: none)."""
    return next((f for f in TEXT_GROUNDERS if model_type in f.model_types), None)


def names() -> tuple[str, ...]:
    """Registry names of every family (``("sam", "sam_hq", "sam2")``)."""
    return tuple(f.name for f in FAMILIES)


def model_types() -> tuple[str, ...]:
    """Every supported ``config.json`` ``model_type``, in registry order."""
    return tuple(t for f in FAMILIES for t in f.model_types)


def aliases() -> dict[str, str]:
    """Short name -> Hub id of every family's released checkpoints (lower-case keys).

    SAM families first, then the text grounders (``"sam3"``).
    """
    found = {k: v for f in FAMILIES for k, v in f.aliases.items()}
    return {**found, **{k: v for f in TEXT_GROUNDERS for k, v in f.aliases.items()}}


def describe() -> str:
    """One line naming each family and its model types (for help texts and messages).

    ``"SAM ('sam'); HQ-SAM ('sam_hq'); SAM 2 / 2.1 ('sam2' or 'sam2_video')"``.
    """
    return "; ".join(
        f"{f.title} ({' or '.join(repr(t) for t in f.model_types)})" for f in FAMILIES
    )


def _unknown(what: str) -> ValueError:
    return ValueError(
        f"{what} is of no supported SAM family; supported: {', '.join(map(repr, names()))} "
        f"(model types: {describe()})."
    )


def get(name: str) -> SamFamily:
    """The family of a registry name or a config ``model_type``.

    Raises:
        ValueError: No such family (the message lists the supported ones).
    """
    for family in FAMILIES:
        if name == family.name or name in family.model_types:
            return family
    raise _unknown(f"{name!r}")


def for_model_type(model_type: str | None) -> SamFamily:
    """The family whose checkpoints have this ``config.json`` ``model_type``.

    Raises:
        ValueError: Of no supported family.
    """
    for family in FAMILIES:
        if model_type in family.model_types:
            return family
    raise _unknown(f"Model type {model_type!r}")


def for_model(model: object) -> SamFamily:
    """The family of a loaded transformers model (by its ``config.model_type``).

    Raises:
        ValueError: Of no supported family (the message names its type and class).
    """
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    try:
        return for_model_type(model_type)
    except ValueError:
        raise _unknown(f"A model of type {model_type!r} ({type(model).__name__})") from None


def for_decoder(decoder: object) -> SamFamily:
    """The family of a bare transformers mask decoder, by the learned tokens it has."""
    for family in FAMILIES:
        if family.decoder_token is not None and hasattr(decoder, family.decoder_token):
            return family
    return next(f for f in FAMILIES if f.decoder_token is None)
