"""Make a ``local-dir:`` copy of a CLIP model, for machines without network access.

Run on a connected machine, copy the folder over, and pass ``clip="local-dir:DIR"``
(``--clip local-dir:DIR`` on the command line)::

    python -m grounded_sam.clip.local_copy ViT-B-16:laion2b_s34b_b88k clip-b16

The folder gets ``open_clip_config.json`` (the architecture and preprocessing) and
``open_clip_model.safetensors`` (the weights), the layout ``local-dir:`` loads. The spec can
be anything :func:`grounded_sam.clip.loading.parse_clip_spec` accepts. Architectures whose
text tower uses a Hugging Face tokenizer (``hf_tokenizer_name`` in their config, e.g. some
SigLIP models) also need that tokenizer in the local Hugging Face cache; the default ViT-B-16
uses open_clip's bundled tokenizer and needs nothing else.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from grounded_sam.clip.loading import ClipSpec

__all__ = ["save_clip_local_dir"]

CONFIG_NAME = "open_clip_config.json"
WEIGHTS_NAME = "open_clip_model.safetensors"
#: What to do when the weights are neither cached nor downloadable (this command is the
#: download step, so "run local_copy" is not the advice here).
OFFLINE_FIX = (
    "Run this command on a machine that can reach the Hugging Face Hub (or has the model in "
    "its Hugging Face cache), then copy the folder it writes here."
)


def save_clip_local_dir(spec: str, directory: str | os.PathLike) -> Path:
    """Download (or read) a CLIP model and write it as a ``local-dir:`` folder.

    Args:
        spec: An open_clip ``name:pretrained`` tag, ``hf-hub:org/repo``, ``name:/weights``
            or ``local-dir:/path`` (see :func:`~grounded_sam.clip.loading.parse_clip_spec`).
        directory: Folder to write (created; files of the same names are overwritten).

    Returns:
        The folder, to pass as ``clip=f"local-dir:{folder}"``.

    Raises:
        grounded_sam.ModelLoadError: The spec is unknown or the weights cannot be had.
    """
    from grounded_sam.clip.loading import clip_hub_model, parse_clip_spec
    from grounded_sam.hub import hub_session

    parsed = parse_clip_spec(spec)
    out = Path(directory).expanduser()
    hub_model = clip_hub_model(spec)
    if hub_model is not None:  # fail in seconds, not after minutes of retries, when offline
        hub_model = dataclasses.replace(hub_model, fix=OFFLINE_FIX)
    with hub_session([hub_model]):  # offline mode inside when the Hub is out but all is cached
        return _write_local_dir(spec, parsed, out)


def _write_local_dir(spec: str, parsed: ClipSpec, out: Path) -> Path:
    """The downloads and writes of :func:`save_clip_local_dir` (Hub checked by the caller)."""
    import open_clip
    from open_clip.push_to_hf_hub import save_config_for_hf
    from safetensors.torch import save_file

    from grounded_sam.clip.loading import _HF_HUB, _LOCAL_DIR
    from grounded_sam.errors import ModelLoadError

    if parsed.source == "hf-hub":
        from huggingface_hub import snapshot_download

        # The repo already has the local-dir layout; fetch just what open_clip reads.
        snapshot_download(
            parsed.model_name[len(_HF_HUB) :],
            local_dir=out,
            allow_patterns=[CONFIG_NAME, "*.safetensors", "*.json", "*.txt", "*.model"],
        )
        return out
    if parsed.source == "local-dir":
        path = Path(parsed.model_name[len(_LOCAL_DIR) :])
        model_cfg = json.loads((path / CONFIG_NAME).read_text(encoding="utf-8"))["model_cfg"]
    else:
        model_cfg = open_clip.get_model_config(parsed.model_name)
        if model_cfg is None:  # pragma: no cover - parse_clip_spec checked the name
            raise ModelLoadError(f"open_clip has no config for {parsed.model_name!r}.")
        model_cfg = json.loads(json.dumps(model_cfg))  # deep copy
        if parsed.force_quick_gelu:
            model_cfg["quick_gelu"] = True
    try:
        model = open_clip.create_model(
            parsed.model_name,
            pretrained=parsed.pretrained,
            force_quick_gelu=parsed.force_quick_gelu,
            require_pretrained=True,
        )
    except Exception as exc:
        raise ModelLoadError(f"Could not load CLIP model {spec!r}: {exc}") from exc
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / WEIGHTS_NAME))
    save_config_for_hf(model, out / CONFIG_NAME, model_config=model_cfg)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m grounded_sam.clip.local_copy SPEC DIR``; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m grounded_sam.clip.local_copy",
        description="Write a CLIP model as a local-dir: folder (open_clip_config.json + "
        "open_clip_model.safetensors) for offline machines.",
    )
    parser.add_argument("spec", help="CLIP model, e.g. ViT-B-16:laion2b_s34b_b88k")
    parser.add_argument("directory", help="output folder")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="show Hugging Face Hub warnings and retries"
    )
    args = parser.parse_args(argv)
    from grounded_sam.errors import ModelLoadError
    from grounded_sam.hub import quiet_hub_logging

    quiet_hub_logging(int(args.verbose))

    try:
        out = save_clip_local_dir(args.spec, args.directory)
    except (ModelLoadError, OSError, ValueError) as exc:
        sys.stderr.write(f"error: {' '.join(str(exc).split())}\n")
        return 1
    print(f"wrote {out}: pass --clip local-dir:{out} (or clip='local-dir:{out}')")
    return 0


if __name__ == "__main__":
    sys.exit(main())
