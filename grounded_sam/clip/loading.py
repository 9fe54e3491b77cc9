"""Parse open_clip model specs and load them into a :class:`ClipScorer`.

Accepted specs:

* ``"ViT-B-16:laion2b_s34b_b88k"``: an open_clip architecture name and pretrained tag (or
  ``"ViT-B-16:/path/to/weights.safetensors"``);
* ``"ViT-B-16"``: a bare architecture name, meaning its ``openai`` weights when open_clip lists
  them, else its first listed tag;
* ``"hf-hub:org/repo"``: a Hugging Face Hub repo in open_clip format;
* ``"local-dir:/path"`` or a plain existing directory path: a directory holding
  ``open_clip_config.json`` and weights (``open_clip_model.safetensors``, or ``*.bin``/``*.pth``).

Downloads happen only here, through open_clip / huggingface_hub (progress bars, standard cache).
"""

from __future__ import annotations

import difflib
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from grounded_sam.clip.checks import (
    ConfigError,
    check_local_model,
    check_model_config,
    check_positional_embeddings,
)
from grounded_sam.clip.regions import CropSettings, CropStyle
from grounded_sam.clip.scorer import ClipScorer
from grounded_sam.clip.text import check_templates
from grounded_sam.device import resolve_device, resolve_dtype
from grounded_sam.errors import ModelLoadError
from grounded_sam.hub import HubModel, check_readable_file, require_hub_models

__all__ = ["DEFAULT_CLIP", "ClipSpec", "clip_hub_model", "load_clip", "parse_clip_spec"]

logger = logging.getLogger(__name__)

#: The CLIP model used when none is given.
DEFAULT_CLIP = "ViT-B-16:laion2b_s34b_b88k"

_HF_HUB = "hf-hub:"
_LOCAL_DIR = "local-dir:"
_WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pth", "*.pt")
_PRECISION = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}

_LOCAL_COPY_HINT = (
    "To use a local copy, pass 'local-dir:/path/to/dir' (or just the directory path), where the "
    "directory holds open_clip_config.json and open_clip_model.safetensors (for example a "
    "snapshot of the model's Hugging Face repo, or the output of "
    "grounded_sam.testing.save_tiny_clip). Models already in the Hugging Face cache (HF_HOME / "
    "HF_HUB_CACHE) load offline with HF_HUB_OFFLINE=1."
)


@dataclass(frozen=True)
class ClipSpec:
    """A parsed CLIP model spec.

    Attributes:
        model_name: What open_clip's factory gets as ``model_name``: an architecture name,
            ``"hf-hub:org/repo"`` or ``"local-dir:/abs/path"``.
        pretrained: Pretrained tag or weights file for architecture names, else None.
        source: ``"builtin"``, ``"hf-hub"`` or ``"local-dir"``.
        display: A short string naming the model, for logs and reprs.
        force_quick_gelu: The pretrained tag was trained with QuickGELU but the architecture
            config does not say so (e.g. ``openai`` weights).
    """

    model_name: str
    pretrained: str | None
    source: str
    display: str
    force_quick_gelu: bool = False


def _load_error(spec: str, reason: str) -> ModelLoadError:
    return ModelLoadError(f"Could not load CLIP model {spec!r}: {reason}\n{_LOCAL_COPY_HINT}")


def _local_dir_spec(spec: str, path: Path) -> ClipSpec:
    path = path.expanduser()
    if not path.is_dir():
        raise _load_error(spec, f"directory {str(path)!r} does not exist.")
    if not (path / "open_clip_config.json").is_file():
        raise _load_error(spec, f"{str(path)!r} has no open_clip_config.json.")
    if not any(any(path.glob(pattern)) for pattern in _WEIGHT_PATTERNS):
        raise _load_error(
            spec, f"{str(path)!r} has no weights file (open_clip_model.safetensors expected)."
        )
    resolved = path.resolve()
    return ClipSpec(f"{_LOCAL_DIR}{resolved}", None, "local-dir", f"local-dir:{resolved}")


def parse_clip_spec(spec: str | os.PathLike[str]) -> ClipSpec:
    """Check a CLIP spec and say how open_clip should load it, without any download.

    Args:
        spec: See the module docstring.

    Returns:
        The parsed :class:`ClipSpec`.

    Raises:
        ModelLoadError: Unknown architecture or tag, missing directory, config or weights.
    """
    import open_clip

    if isinstance(spec, os.PathLike):
        return _local_dir_spec(str(spec), Path(spec))
    if not isinstance(spec, str) or not spec.strip():
        raise _load_error(str(spec), f"the spec is empty; use e.g. {DEFAULT_CLIP!r}.")
    text = spec.strip()
    if text.startswith(_LOCAL_DIR):
        rest = text[len(_LOCAL_DIR) :].strip()
        if not rest:
            raise _load_error(spec, "no path after 'local-dir:'.")
        return _local_dir_spec(spec, Path(rest))
    if text.startswith(_HF_HUB):
        repo = text[len(_HF_HUB) :].strip()
        if repo.count("/") != 1 or not all(repo.split("/")):
            raise _load_error(spec, "expected 'hf-hub:org/repo'.")
        return ClipSpec(f"{_HF_HUB}{repo}", None, "hf-hub", f"{_HF_HUB}{repo}")
    if Path(text).expanduser().is_dir():
        return _local_dir_spec(spec, Path(text))

    name, sep, tag = text.partition(":")
    name = name.strip().replace("/", "-")
    tag = tag.strip()
    models = open_clip.list_models()
    if name not in models:
        if "/" in text and not sep:
            reason = (
                f"{text!r} is neither an existing directory nor an open_clip architecture; for a "
                f"Hugging Face Hub repo write 'hf-hub:{text}'."
            )
        else:
            close = difflib.get_close_matches(name, models, n=5)
            hint = f" Did you mean one of {close}?" if close else ""
            reason = (
                f"unknown open_clip architecture {name!r}.{hint} See open_clip.list_models(), or "
                "use 'name:pretrained' (e.g. 'ViT-B-16:laion2b_s34b_b88k'), 'hf-hub:org/repo' "
                "or 'local-dir:/path'."
            )
        raise _load_error(spec, reason)
    tags = open_clip.list_pretrained_tags_by_model(name)
    if sep and not tag:
        raise _load_error(spec, f"no pretrained tag after ':'. Known tags for {name}: {tags}.")
    if not tag:
        if not tags:
            raise _load_error(
                spec,
                f"open_clip knows no pretrained weights for {name}; give a weights file "
                f"as '{name}:/path/to/weights.safetensors'.",
            )
        tag = "openai" if "openai" in tags else tags[0]
        logger.info("CLIP spec %r: using pretrained tag %r", spec, tag)
    if open_clip.pretrained.is_pretrained_cfg(name, tag):
        cfg = open_clip.get_pretrained_cfg(name, tag)
        model_cfg = open_clip.get_model_config(name) or {}
        quick = bool(cfg.get("quick_gelu", False)) and not model_cfg.get("quick_gelu", False)
        return ClipSpec(name, tag, "builtin", f"{name}:{tag}", force_quick_gelu=quick)
    weights = Path(tag).expanduser()
    if weights.is_file():
        return ClipSpec(name, str(weights.resolve()), "builtin", f"{name}:{weights}")
    raise _load_error(
        spec,
        f"{tag!r} is neither a pretrained tag of {name} nor an existing weights file. "
        f"Known tags for {name}: {tags}.",
    )


def clip_hub_model(
    spec: str | os.PathLike[str], cache_dir: str | os.PathLike[str] | None = None
) -> HubModel | None:
    """The Hub repository a CLIP spec downloads from (None: local folder, file or plain URL).

    Raises:
        ModelLoadError: The spec is malformed or unknown (see :func:`parse_clip_spec`).
    """
    import open_clip

    parsed = parse_clip_spec(spec)
    weights = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
    if parsed.source == "hf-hub":
        repo, files = parsed.model_name[len(_HF_HUB) :], (("open_clip_config.json",), weights)
    elif parsed.source == "builtin" and open_clip.pretrained.is_pretrained_cfg(
        parsed.model_name, parsed.pretrained or ""
    ):
        hf_hub = open_clip.get_pretrained_cfg(parsed.model_name, parsed.pretrained).get("hf_hub")
        if not hf_hub:
            return None  # downloaded from a URL, not the Hub
        repo, filename = os.path.split(hf_hub)  # "org/name/" or "org/name/file.bin"
        alternatives = (filename, filename.rsplit(".", 1)[0] + ".safetensors")
        files = (alternatives if filename else weights,)
    else:
        return None
    name = spec if isinstance(spec, str) else parsed.display
    return HubModel(
        what=f"CLIP model {name!r}",
        repo_id=repo,
        files=files,
        fix="For CLIP, on a connected machine run `python -m grounded_sam.clip.local_copy "
        f"{parsed.display} DIR` (writes open_clip_config.json and "
        "open_clip_model.safetensors), copy DIR over and pass clip='local-dir:DIR' "
        "(--clip local-dir:DIR).",
        cache_dir=None if cache_dir is None else str(cache_dir),
    )


def _exception_chain(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain and len(chain) < 20:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _hub_offline() -> bool:
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover - open_clip depends on it
        return False
    return bool(constants.HF_HUB_OFFLINE)


def _download_advice(parsed: ClipSpec) -> str:
    """The exact command that makes a local open_clip folder of a hub model ("" if none)."""
    repo = None
    if parsed.source == "hf-hub":
        repo = parsed.model_name[len(_HF_HUB) :]
    elif parsed.source == "builtin" and parsed.pretrained:
        try:
            import open_clip

            repo = (open_clip.get_pretrained_cfg(parsed.model_name, parsed.pretrained) or {}).get(
                "hf_hub"
            )
        except Exception:  # noqa: BLE001 - advice only; never mask the real error
            repo = None
    if not repo:
        return ""
    repo = repo.strip("/")
    return (
        f" Download it on a connected machine with `hf download {repo} --local-dir DIR` "
        "(an open_clip folder: open_clip_config.json + weights) and pass --clip DIR on the "
        "command line (clip='DIR' in Python)."
    )


def _explain(exc: BaseException, parsed: ClipSpec) -> str:
    """One readable sentence about why open_clip failed."""
    chain = _exception_chain(exc)
    names = {type(e).__name__ for e in chain}
    text = " ".join(str(e) for e in chain).lower()
    remote = parsed.source == "hf-hub" or (
        parsed.source == "builtin"
        and parsed.pretrained is not None
        and not Path(parsed.pretrained).is_file()
    )
    if remote and (
        names & {"LocalEntryNotFoundError", "OfflineModeIsEnabled"} or "offline" in text
    ):
        if _hub_offline():
            return (
                "the files are not in the local Hugging Face cache and downloads are disabled "
                "(HF_HUB_OFFLINE=1)."
            )
        return (
            "the files are not in the local Hugging Face cache and could not be downloaded "
            "(no network, or the Hugging Face Hub is unreachable)."
        )
    if remote and (
        names & {"ConnectError", "ConnectionError", "ConnectTimeout", "TimeoutException"}
        or "connection" in text
    ):
        return "the Hugging Face Hub could not be reached (no network?) and no cached copy exists."
    if names & {"RepositoryNotFoundError", "GatedRepoError", "EntryNotFoundError"}:
        return "the Hugging Face Hub repo or file was not found (or needs a login)."
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"{type(exc).__name__}: {first[:500]}"


def _check_before_build(parsed: ClipSpec, spec: str, cache_dir: str | None) -> None:
    """Bounds and consistency of user-supplied configs and weights, before open_clip runs.

    A ``local-dir:`` folder gets every check of :mod:`grounded_sam.clip.checks`; a weights
    file given for a built-in architecture is checked against that architecture's config; an
    ``hf-hub:`` config already in the cache is bounded before open_clip builds from it.
    """
    try:
        if parsed.source == "local-dir":
            check_local_model(Path(parsed.model_name[len(_LOCAL_DIR) :]))
        elif parsed.source == "builtin" and parsed.pretrained and Path(parsed.pretrained).is_file():
            import open_clip

            check_readable_file(parsed.pretrained, "the CLIP weights")
            rows = check_model_config(open_clip.get_model_config(parsed.model_name) or {})
            check_positional_embeddings(Path(parsed.pretrained), rows)
        elif parsed.source == "hf-hub":
            from huggingface_hub import try_to_load_from_cache

            from grounded_sam.clip.checks import read_config

            repo = parsed.model_name[len(_HF_HUB) :]
            found = try_to_load_from_cache(repo, "open_clip_config.json", cache_dir=cache_dir)
            if isinstance(found, str):
                check_model_config(read_config(Path(found))["model_cfg"])
    except ConfigError as exc:
        raise _load_error(spec, str(exc)) from None


def load_clip(
    spec: str | os.PathLike[str] = DEFAULT_CLIP,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    crop_style: CropStyle = "masked",
    templates: Sequence[str] | None = None,
    *,
    crop_margin: float = 0.1,
    batch_size: int = 64,
    cache_dir: str | os.PathLike[str] | None = None,
) -> ClipScorer:
    """Load an open_clip model (downloading if needed) and wrap it in a :class:`ClipScorer`.

    Args:
        spec: ``"name:pretrained"``, bare ``"name"``, ``"hf-hub:org/repo"``,
            ``"local-dir:/path"`` or an existing directory (see the module docstring).
        device: ``"cuda"``, ``"cpu"``, ... or None for CUDA when present, else CPU.
        dtype: ``"float32"``, ``"float16"``, ``"bfloat16"`` or None (the automatic choice of
            :func:`grounded_sam.device.resolve_dtype`). Half precision follows open_clip's
            mixed ``fp16``/``bf16`` mode.
        crop_style: ``"masked"``, ``"box"`` or ``"blur"`` region crops.
        templates: Prompt templates with one ``{}`` each; None for the defaults.
        crop_margin: Context around each box, as a fraction of the box's longer side.
        batch_size: Crops per image-tower forward.
        cache_dir: Download cache directory; None for the Hugging Face default.

    Returns:
        The ready :class:`ClipScorer` (model in eval mode, on ``device``).

    Raises:
        ModelLoadError: The spec is unknown or malformed, a directory/file is missing or
            unreadable, a local config's sizes exceed :data:`grounded_sam.clip.checks.
            CONFIG_BOUNDS` (checked before anything is built), its weights do not fit it
            (e.g. a positional embedding of another length, which open_clip would silently
            resize), or the weights cannot be found or downloaded; the message says how to
            use a local copy.
        ValueError: Bad device, dtype, crop style or templates.
    """
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    CropSettings(style=crop_style, margin=crop_margin)  # validate before any download
    check_templates(templates)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    parsed = parse_clip_spec(spec)
    require_hub_models([clip_hub_model(spec, cache_dir)])  # fails in seconds if offline, not cached
    display = str(spec) if not isinstance(spec, os.PathLike) else parsed.display
    _check_before_build(parsed, display, None if cache_dir is None else str(cache_dir))
    started = time.perf_counter()
    logger.info("Loading CLIP %s on %s (%s)", parsed.display, torch_device, torch_dtype)

    import open_clip

    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            parsed.model_name,
            pretrained=parsed.pretrained,
            precision=_PRECISION[torch_dtype],
            device=torch_device,
            force_quick_gelu=parsed.force_quick_gelu,
            pretrained_text=False,
            cache_dir=None if cache_dir is None else str(cache_dir),
            require_pretrained=True,  # never hand back silently random weights
        )
        tokenizer = open_clip.get_tokenizer(
            parsed.model_name, cache_dir=None if cache_dir is None else str(cache_dir)
        )
    except Exception as exc:  # the loading boundary: one clear error, details in the debug log
        logger.debug("open_clip failed to load %s", parsed.display, exc_info=exc)
        raise _load_error(display, _explain(exc, parsed) + _download_advice(parsed)) from None
    model.eval()
    model.requires_grad_(False)
    scorer = ClipScorer(
        model,
        tokenizer,
        preprocess,
        spec=parsed.display,
        device=torch_device,
        dtype=torch_dtype,
        crop_style=crop_style,
        templates=templates,
        crop_margin=crop_margin,
        batch_size=batch_size,
    )
    logger.info("Loaded CLIP %s in %.1f s", parsed.display, time.perf_counter() - started)
    return scorer
