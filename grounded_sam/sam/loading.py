"""Loading a SAM-family checkpoint, config first, from a Hugging Face id or a local directory.

The checkpoint's ``config.json`` is read BEFORE any weights: its ``model_type`` picks the
family's transformers class from the registry (:mod:`grounded_sam.sam.families`:
``SamModel``, ``SamHQModel`` or ``Sam2Model``; ``Sam3Model`` for SAM 3, a text grounder of
its own: :data:`~grounded_sam.sam.families.TEXT_GROUNDERS`), and anything else is
refused with a :class:`~grounded_sam.errors.ModelLoadError` naming the type found and the
supported families. Loading itself is checked too: a checkpoint whose weights do not all fit
the class (transformers' "newly initialized" case) is refused, so a user never gets random
weights.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import torch

from grounded_sam.errors import ModelLoadError
from grounded_sam.hub import HubModel, check_readable_file, gated_advice, require_hub_models
from grounded_sam.sam import families

__all__ = [
    "DEFAULT_SAM",
    "SAM_ALIASES",
    "SAM_FAMILIES",
    "SamCheckpoint",
    "load_sam_model",
    "peek_grounder",
    "resolve_sam_checkpoint",
    "sam_hub_model",
]

logger = logging.getLogger(__name__)

DEFAULT_SAM = "facebook/sam-vit-base"
"""Default SAM checkpoint: ViT-B, the fastest of the three."""

SAM_ALIASES: dict[str, str] = families.aliases()
"""Short names accepted for the official checkpoints (case-insensitive), from the registry."""

SAM_FAMILIES: dict[str, tuple[str, str]] = {
    t: (f.model_class, f.title) for f in families.FAMILIES for t in f.model_types
}
"""config.json ``model_type`` -> (transformers class, family name) of every supported family
(a view of :mod:`grounded_sam.sam.families`)."""

def _supported() -> str:
    grounders = "; ".join(
        f"{f.title} ({' or '.join(repr(t) for t in f.model_types)})"
        for f in families.TEXT_GROUNDERS
    )
    return f"{families.describe()}; and as a text grounder {grounders}"


def _family(model_type: str) -> families.SamFamily | families.GrounderFamily:
    """The SAM family or text-grounder family of a ``model_type`` (ValueError: neither)."""
    return families.grounder_for_model_type(model_type) or families.for_model_type(model_type)


@dataclass(frozen=True)
class SamCheckpoint:
    """Where a SAM-family checkpoint is and what its config says, before any weights load.

    Attributes:
        spec: What the user gave (alias resolved).
        source: What to pass to ``from_pretrained`` (hub id or folder path).
        model_type: ``model_type`` of its ``config.json``.
        is_local: A local folder rather than a hub id.
    """

    spec: str
    source: str
    model_type: str
    is_local: bool

    @property
    def class_name(self) -> str:
        """The transformers class that loads it (``SamModel`` ... ``Sam3Model``)."""
        return _family(self.model_type).model_class

    @property
    def family(self) -> str:
        """Human name of the family (``"SAM"``, ``"HQ-SAM"``, ``"SAM 2 / 2.1"``, ``"SAM 3"``)."""
        return _family(self.model_type).title

    @property
    def grounder(self) -> families.GrounderFamily | None:
        """The text-grounder family (SAM 3) of the checkpoint, None for a SAM family."""
        return families.grounder_for_model_type(self.model_type)


def _looks_like_path(spec: str) -> bool:
    return spec.startswith(("/", "./", "../", "~")) or os.sep in spec.strip("/").split("/", 1)[-1]


def _read_model_type(config_file: str | Path, where: str) -> str:
    """``model_type`` of a config.json; ModelLoadError when unreadable or absent."""
    try:
        data = json.loads(Path(config_file).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{where}: config.json could not be read ({exc}).") from exc
    value = data.get("model_type") if isinstance(data, dict) else None
    if not isinstance(value, str):
        raise ModelLoadError(
            f"{where}: config.json has no 'model_type', so the model family is unknown. "
            f"Supported: {_supported()}."
        )
    return value


def _check_type(model_type: str, where: str) -> None:
    if families.grounder_for_model_type(model_type) is not None:
        return
    if model_type not in families.model_types():
        raise ModelLoadError(
            f"{where} holds a {model_type!r} model, not SAM: its config.json model_type is "
            f"{model_type!r}, but grounded_sam supports only the SAM families: {_supported()}. "
            "Pass a checkpoint of one of those."
        )


def _gated(repo: str) -> bool:
    """Whether ``repo`` is a released checkpoint of a gated family (facebook/sam3)."""
    return any(f.gated and repo in f.aliases.values() for f in families.TEXT_GROUNDERS)


def _download_advice(repo: str) -> str:
    if _gated(repo):
        return gated_advice(repo)
    return (
        f"Download it on a connected machine with `hf download {repo} --local-dir DIR` and "
        f"pass --sam DIR on the command line (sam='DIR' in Python)."
    )


def _hub_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _hub_config_file(repo: str) -> str:
    """Path of a hub repo's config.json: the cached copy, else downloaded (unless offline).

    Raises:
        ModelLoadError: Not cached and it could not be downloaded; says what to do.
    """
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    cached = try_to_load_from_cache(repo, "config.json")
    if isinstance(cached, str):
        return cached
    if _hub_offline():
        reason = (
            "it is not in the local Hugging Face cache and downloads are off (HF_HUB_OFFLINE=1)"
        )
    else:
        try:
            return hf_hub_download(repo, "config.json")
        except Exception as exc:  # noqa: BLE001 - hub errors vary by version; all mean "not here"
            reason = (
                "it is not in the local Hugging Face cache and could not be downloaded "
                f"(offline, or a wrong id: {type(exc).__name__})"
            )
            if type(exc).__name__ == "GatedRepoError":  # logged out, or licence not accepted
                raise ModelLoadError(
                    f"Could not load SAM model {repo!r}: it is gated and this account has no "
                    f"access yet. {gated_advice(repo)}"
                ) from None
    spelling = ""
    if repo not in SAM_ALIASES.values():
        examples = ", ".join(f.example_id for f in families.FAMILIES)
        spelling = f" Check the spelling too (e.g. {examples})."
    raise ModelLoadError(
        f"Could not load SAM model {repo!r}: {reason}. {_download_advice(repo)}{spelling}"
    )


def _missing_folder(path: Path) -> ModelLoadError:
    return ModelLoadError(
        f"SAM model directory not found: {path}. Give an existing folder saved with "
        "save_pretrained (config.json + model.safetensors), or a Hugging Face id "
        f"such as {DEFAULT_SAM!r}."
    )


def sam_hub_model(spec: str | os.PathLike) -> HubModel | None:
    """The Hub repository ``spec`` names (None for a local folder).

    Raises:
        ModelLoadError: ``spec`` is a path that does not exist (reported before any other
            model is looked at).
    """
    spec_str = os.fspath(spec)
    repo = SAM_ALIASES.get(spec_str.lower(), spec_str)
    if Path(repo).expanduser().exists():
        return None
    if isinstance(spec, os.PathLike) or _looks_like_path(repo):
        raise _missing_folder(Path(repo).expanduser())
    return HubModel(
        what=f"SAM model {repo!r}",
        repo_id=repo,
        # The config decides the family first (resolve_sam_checkpoint); missing weights of a
        # cached config are reported by the loader (offline mode: no retries either).
        files=(("config.json",),),
        fix=f"For SAM: {_download_advice(repo)}",
    )


def resolve_sam_checkpoint(spec: str | os.PathLike) -> SamCheckpoint:
    """Find a checkpoint and read its config, without loading any weights.

    Args:
        spec: Hugging Face id, alias (see :data:`SAM_ALIASES`) or local ``save_pretrained``
            folder.

    Returns:
        The checkpoint, with a supported ``model_type``.

    Raises:
        ModelLoadError: Not found, not readable, or not a SAM-family model (the message names
            the ``model_type`` found and the supported families).
    """
    hub = sam_hub_model(spec)  # None for an existing local path; refuses a missing one
    if hub is None:
        spec_str = os.fspath(spec)
        spec_str = SAM_ALIASES.get(spec_str.lower(), spec_str)
        path = Path(spec_str).expanduser()
        if not path.is_dir() or not (path / "config.json").is_file():
            raise ModelLoadError(
                f"{path} is not a SAM model folder: expected config.json and model weights "
                "written by save_pretrained (SamModel, SamHQModel, Sam2Model or Sam3Model)."
            )
        check_readable_file(path / "config.json", f"the SAM model in {path} (its config.json)")
        model_type = _read_model_type(path / "config.json", str(path))
        _check_type(model_type, str(path))
        _check_local_weights(path)
        return SamCheckpoint(spec_str, str(path), model_type, is_local=True)
    require_hub_models([hub])  # fails in seconds when offline and not cached
    spec_str = hub.repo_id
    config_file = _hub_config_file(spec_str)
    model_type = _read_model_type(config_file, f"Hugging Face model {spec_str!r}")
    _check_type(model_type, f"Hugging Face model {spec_str!r} (config {config_file})")
    return SamCheckpoint(spec_str, spec_str, model_type, is_local=False)


def peek_grounder(spec: str | os.PathLike) -> families.GrounderFamily | None:
    """The text-grounder family (SAM 3) a SAM spec names, told without network or weights.

    A local folder's ``config.json``, a Hub id whose config is in the local cache, or a
    released id / alias of the family (``"sam3"``, ``"facebook/sam3"``). Used before any
    download, to leave CLIP out of the models an engine checks and loads.

    Args:
        spec: As for :func:`load_sam_model`.

    Returns:
        The family, or None (a SAM family, or not known yet: the loader then decides from the
        config, and reports what is wrong).
    """
    spec_str = os.fspath(spec)
    repo = SAM_ALIASES.get(spec_str.lower(), spec_str)
    config: str | Path | None = None
    path = Path(repo).expanduser()
    try:
        if path.is_dir():
            config = path / "config.json"
        else:
            known = next((f for f in families.TEXT_GROUNDERS if repo in f.aliases.values()), None)
            if known is not None:
                return known
            if _looks_like_path(repo) or isinstance(spec, os.PathLike):
                return None
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(repo, "config.json")
            config = cached if isinstance(cached, str) else None
        if config is None or not Path(config).is_file():
            return None
        data = json.loads(Path(config).read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError):  # unreadable or odd: the loader reports it
        return None
    model_type = data.get("model_type") if isinstance(data, dict) else None
    return families.grounder_for_model_type(model_type if isinstance(model_type, str) else None)


WEIGHTS_NAMES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
"""The weights files ``from_pretrained`` looks for in a local folder, in its order."""


def _check_local_weights(path: Path) -> None:
    """Refuse a folder whose weights are missing, unreadable or special files.

    Checks the first of :data:`WEIGHTS_NAMES` present (as ``from_pretrained`` picks it) and,
    for a sharded checkpoint, the shards its index names; a FIFO or an unreadable file is
    refused here instead of blocking or failing later with "No such file".
    """
    found = next((path / n for n in WEIGHTS_NAMES if os.path.lexists(path / n)), None)
    if found is None:
        raise ModelLoadError(
            f"{path} holds no SAM model weights: expected model.safetensors (or "
            "pytorch_model.bin) written by save_pretrained next to its config.json."
        )
    what = f"the SAM model in {path} (its {found.name})"
    check_readable_file(found, what)
    if not found.name.endswith(".index.json"):
        return
    try:
        weight_map = json.loads(found.read_text(encoding="utf-8")).get("weight_map") or {}
        shards = sorted({str(v) for v in weight_map.values()})
    except (OSError, ValueError, AttributeError) as exc:
        raise ModelLoadError(f"Cannot load {what}: it is not a valid index ({exc}).") from exc
    for shard in shards:
        if Path(shard).name != shard or shard in (".", ".."):
            raise ModelLoadError(
                f"Cannot load {what}: it names a shard outside the folder ({shard!r})."
            )
        check_readable_file(path / shard, f"the SAM model in {path} (its shard {shard})")


def _pickle_refused(ckpt: SamCheckpoint, exc: Exception) -> ModelLoadError:
    """The error for a ``.bin`` checkpoint that torch's ``weights_only`` loader refused."""
    where = ckpt.source if ckpt.is_local else "DIR"
    name = "pytorch_model.bin"
    return ModelLoadError(
        f"{ckpt.spec!r}: {name} is a pickle checkpoint that cannot be loaded safely (it holds "
        "objects other than tensors, which could run code when unpickled). Convert it to "
        "safetensors, only if you trust its source: state = torch.load("
        f"'{where}/{name}', weights_only=False), keep its tensors (state = {{k: v for k, v in "
        "state.items() if isinstance(v, torch.Tensor)}) and write them with "
        f"safetensors.torch.save_file(state, '{where}/model.safetensors'); "
        "it is then loaded instead."
    )


def _model_class(class_name: str):
    import transformers

    return getattr(transformers, class_name)


def load_sam_model(spec: str | os.PathLike, device: torch.device, dtype: torch.dtype):
    """Load a SAM-family model, picking the class from the checkpoint's config.

    Args:
        spec: A Hugging Face model id (``"facebook/sam-vit-huge"``,
            ``"facebook/sam2.1-hiera-tiny"``, ``"syscv-community/sam-hq-vit-base"``), an alias
            (``"vit_b"``, ``"hq_vit_b"``, ``"sam2.1_t"``, ... see :data:`SAM_ALIASES`), or a
            local directory in ``save_pretrained`` layout (``config.json`` +
            ``model.safetensors``).
        device: Where to put the model.
        dtype: Weight precision.

    Returns:
        ``transformers.SamModel``, ``SamHQModel``, ``Sam2Model`` (or ``Sam3Model`` for a SAM 3
        checkpoint) in eval mode on ``device`` with ``dtype`` weights.

    Raises:
        ModelLoadError: The model could not be found, downloaded or read, is not a SAM-family
            model, or its weights do not all fit the model (some would be random). The message
            names the model and says what to do.
    """
    from safetensors import SafetensorError  # raised for a truncated / corrupt file

    ckpt = resolve_sam_checkpoint(spec)
    cls = _model_class(ckpt.class_name)
    if ckpt.is_local:
        logger.info("Loading %s from local folder %s", ckpt.class_name, ckpt.source)
    else:
        logger.info(
            "Loading %s %s (downloads into the Hugging Face cache if needed)",
            ckpt.family,
            ckpt.source,
        )
    try:
        model, info = cls.from_pretrained(ckpt.source, output_loading_info=True)
    except pickle.UnpicklingError as exc:  # torch.load(weights_only=True) refused the file
        raise _pickle_refused(ckpt, exc) from exc
    except (OSError, ValueError, RuntimeError, SafetensorError) as exc:
        hint = (
            "It could not be read; check that the folder holds a complete save_pretrained copy."
            if ckpt.is_local
            else "Its weights are not in the local Hugging Face cache and could not be "
            f"downloaded (offline?). {_download_advice(ckpt.source)}"
        )
        raise ModelLoadError(f"Could not load SAM model {ckpt.spec!r}. {hint} ({exc})") from exc
    if model.__class__.__name__ != ckpt.class_name:
        raise ModelLoadError(
            f"{ckpt.spec!r} loaded as {type(model).__name__}, not {ckpt.class_name}."
        )
    _check_loading_info(ckpt, info)
    return model.to(device=device, dtype=dtype).eval()


def _check_loading_info(ckpt: SamCheckpoint, info: dict) -> None:
    """Refuse a model whose weights did not all come from the checkpoint."""
    missing = list(info.get("missing_keys") or [])
    unexpected = list(info.get("unexpected_keys") or [])
    mismatched = [k if isinstance(k, str) else k[0] for k in info.get("mismatched_keys") or []]
    if not (missing or unexpected or mismatched):
        return
    parts = []
    for what, keys in (
        ("missing (would be random)", missing),
        ("unexpected", unexpected),
        ("of the wrong shape (would be random)", mismatched),
    ):
        if keys:
            shown = ", ".join(sorted(keys)[:5]) + (" ..." if len(keys) > 5 else "")
            parts.append(f"{len(keys)} weights {what}: {shown}")
    raise ModelLoadError(
        f"{ckpt.spec!r} ({ckpt.family}, {ckpt.class_name}) does not match its checkpoint: "
        + "; ".join(parts)
        + ". It was refused rather than used with random weights; pass a complete checkpoint "
        "saved with save_pretrained by the same model class."
    )
