"""Options and helpers shared by the ``grounded-sam`` commands."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    import supervision as sv

    from grounded_sam.pipeline import GroundedSAM
    from grounded_sam.sam.everything import EverythingSettings
    from grounded_sam.utils.progress import StageProgress

__all__ = [
    "PROG",
    "ArgumentParser",
    "HelpFormatter",
    "add_model_options",
    "add_proposal_options",
    "check_out_dir",
    "load_engine",
    "say",
    "stage_progress",
    "proposal_settings",
    "format_table",
    "unique_stems",
]

logger = logging.getLogger(__name__)

PROG = "grounded-sam"
ENV_SAM = "GROUNDED_SAM_SAM"
ENV_CLIP = "GROUNDED_SAM_CLIP"


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows every option's default and keeps the examples' line breaks."""


class ArgumentParser(argparse.ArgumentParser):
    """An argparse parser whose usage errors are one line on stderr (exit code 2)."""

    def error(self, message: str) -> NoReturn:
        """Print ``PROG: error: message`` and exit with status 2."""
        sys.stderr.write(f"{self.prog}: error: {message} (see '{self.prog} --help')\n")
        sys.exit(2)


# -- argument types (one-line errors through ArgumentParser.error) -------------------------


def probability(text: str) -> float:
    """A float in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text}")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def non_negative_int(text: str) -> int:
    """An integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text}")
    return value


# -- option groups -------------------------------------------------------------------------


def _engine_defaults() -> dict[str, Any]:
    """The engine's defaults, from :mod:`grounded_sam.cli.defaults` (no torch import)."""
    from types import SimpleNamespace

    from grounded_sam.cli import defaults

    return {"proposals": SimpleNamespace(**defaults.INDEX_PROPOSALS), **defaults.QUERY}


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """--sam, --clip, --device, --dtype, --crop-style and -v/--verbose."""
    from grounded_sam.cli.defaults import DEFAULT_CLIP, DEFAULT_SAM

    group = parser.add_argument_group("models")
    group.add_argument(
        "--sam",
        metavar="MODEL",
        default=os.environ.get(ENV_SAM) or DEFAULT_SAM,
        help="SAM checkpoint: a Hugging Face id (facebook/sam-vit-base, -large, -huge; "
        "HQ-SAM or SAM 2.1 ids too), an alias (vit_b, vit_l, vit_h, hq_vit_b, sam2.1_t, "
        f"sam2.1_s, sam2.1_b+, sam2.1_l) or a local save_pretrained folder; ${ENV_SAM} sets "
        "the default. A SAM 3 checkpoint (facebook/sam3, alias sam3; gated) grounds text "
        "itself: --clip and --crop-style are then not used",
    )
    group.add_argument(
        "--clip",
        metavar="MODEL",
        default=os.environ.get(ENV_CLIP) or DEFAULT_CLIP,
        help="CLIP model: an open_clip 'name:pretrained' tag, 'hf-hub:org/repo' or "
        f"'local-dir:/path'; ${ENV_CLIP} sets the default",
    )
    group.add_argument(
        "--device",
        default="auto",
        help="'cpu', 'cuda', 'cuda:N', 'mps', or 'auto' (CUDA when present, else CPU)",
    )
    group.add_argument(
        "--dtype",
        default="auto",
        choices=("auto", "float32", "float16", "bfloat16"),
        help="model precision; 'auto' is float16 on CUDA, bfloat16 on CPUs with AMX/AVX512-BF16, "
        "else float32 (env GROUNDED_SAM_DTYPE overrides 'auto')",
    )
    group.add_argument(
        "--crop-style",
        default="masked",
        choices=("masked", "box", "blur"),
        help="how a region is shown to CLIP: background filled, plain box crop, or blurred",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="log progress (-v) or debug details and tracebacks (-vv) to stderr",
    )
    parser.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="no progress bars or timing lines on stderr (errors are still shown)",
    )


def add_proposal_options(parser: argparse.ArgumentParser) -> None:
    """Knobs of the phrase-independent region proposals (the image index)."""
    d = _engine_defaults()
    s = d["proposals"]
    group = parser.add_argument_group("region proposals (computed once per image)")
    group.add_argument(
        "--points-per-side",
        type=positive_int,
        default=s.points_per_side,
        help="grid of SAM point prompts along each image side",
    )
    group.add_argument(
        "--points-per-batch",
        type=positive_int,
        default=s.points_per_batch,
        help="point prompts decoded per SAM decoder call (memory vs speed)",
    )
    group.add_argument(
        "--pred-iou-thresh",
        type=probability,
        default=s.pred_iou_thresh,
        help="keep proposals whose SAM predicted IoU is above this",
    )
    group.add_argument(
        "--stability-score-thresh",
        type=probability,
        default=s.stability_score_thresh,
        help="keep proposals whose stability score is at least this",
    )
    group.add_argument(
        "--box-nms-thresh",
        type=probability,
        default=s.box_nms_thresh,
        help="box IoU above which duplicate proposals are removed",
    )
    group.add_argument(
        "--crop-n-layers",
        type=non_negative_int,
        default=s.crop_n_layers,
        help="extra layers of zoomed-in image crops (finds small objects; slower)",
    )
    group.add_argument(
        "--max-regions",
        type=positive_int,
        default=d["max_regions"],
        help="at most this many proposals (best predicted IoU first) are scored with CLIP",
    )


def proposal_settings(args: argparse.Namespace) -> EverythingSettings:
    """The index's proposal settings from the parsed region-proposal options."""
    from grounded_sam import EverythingSettings

    return EverythingSettings(
        points_per_side=args.points_per_side,
        points_per_batch=args.points_per_batch,
        pred_iou_thresh=args.pred_iou_thresh,
        stability_score_thresh=args.stability_score_thresh,
        box_nms_thresh=args.box_nms_thresh,
        crop_n_layers=args.crop_n_layers,
    )


# -- engine --------------------------------------------------------------------------------


def stage_progress(args: argparse.Namespace) -> StageProgress:
    """Progress bars on stderr for one image's stages, off with ``-q``."""
    from grounded_sam.utils.progress import StageProgress

    return StageProgress(enabled=not getattr(args, "quiet", False))


def say(args: argparse.Namespace, text: str) -> None:
    """A status line on stderr (``grounded-sam: ...``), unless ``-q``; stdout stays clean."""
    if getattr(args, "quiet", False):
        return
    from tqdm import tqdm

    tqdm.write(f"{PROG}: {text}", file=sys.stderr)  # does not break a running bar
    sys.stderr.flush()


def _quiet_weight_loading(verbose: int) -> None:
    """Hide transformers' "Loading weights" bars (keep Hugging Face download bars)."""
    from grounded_sam.hub import quiet_hub_logging

    quiet_hub_logging(verbose)  # also after transformers is imported: levels set last
    if verbose:
        return
    try:
        import huggingface_hub.utils
        import transformers.utils.logging as hf_logging

        hf_logging.disable_progress_bar()
        huggingface_hub.utils.enable_progress_bars()
    except (ImportError, AttributeError):  # pragma: no cover - other transformers versions
        pass


def load_engine(args: argparse.Namespace) -> GroundedSAM:
    """Build the engine from the model and proposal options.

    The command's query flags (:mod:`grounded_sam.cli.options`), when it has them, become the
    engine's default :attr:`~grounded_sam.GroundedSAM.options` (``refine`` also sets the
    passes of the box decodes :meth:`~grounded_sam.GroundedSAM.index` prefetches).

    Raises:
        grounded_sam.ModelLoadError: A model cannot be loaded (the message names it).
        ValueError: Bad device or dtype.
    """
    import time

    from grounded_sam.clip.loading import clip_hub_model
    from grounded_sam.hub import require_hub_models
    from grounded_sam.sam.loading import peek_grounder, sam_hub_model

    # Before the heavier imports: offline and not cached fails here, naming both models
    # (CLIP not for a text-grounder family's checkpoint, e.g. SAM 3: families.TEXT_GROUNDERS).
    clip = None if peek_grounder(args.sam) else clip_hub_model(args.clip)
    require_hub_models([sam_hub_model(args.sam), clip])
    from grounded_sam import GroundedSAM
    from grounded_sam.cli.options import query_options

    _quiet_weight_loading(args.verbose)
    kwargs: dict[str, Any] = {}
    if hasattr(args, "points_per_side") and hasattr(args, "max_regions"):
        kwargs["proposal_settings"] = proposal_settings(args)
        kwargs["max_regions"] = args.max_regions
    t0 = time.perf_counter()
    gs = GroundedSAM.from_pretrained(
        sam=args.sam,
        clip=args.clip,
        device=None if args.device == "auto" else args.device,
        dtype=None if args.dtype == "auto" else args.dtype,
        crop_style=args.crop_style,
        **kwargs,
    )
    if hasattr(args, "threshold"):  # the command's query flags are the engine's defaults
        gs.options = query_options(args, gs.options)
    say(args, f"models ready in {time.perf_counter() - t0:.1f}s on {gs.device}")
    return gs


# -- checks and output ---------------------------------------------------------------------


def check_out_dir(path: str | os.PathLike | None, option: str = "--out") -> Path | None:
    """Fail early (before loading models) when an output folder cannot be used.

    Raises:
        ValueError: The path exists and is not a folder.
    """
    if path is None:
        return None
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise ValueError(f"Output path {out} ({option}) is a file: give a folder.")
    return out


def check_images_exist(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Fail early when an input image is missing or is a folder.

    Raises:
        FileNotFoundError: A path does not exist.
        ValueError: A path is a folder.
    """
    out = []
    for p in map(Path, paths):
        if not p.exists():
            raise FileNotFoundError(f"Image not found: {p}")
        if p.is_dir():
            raise ValueError(f"{p} is a folder, not an image ('grounded-sam label' takes folders)")
        out.append(p)
    return out


def unique_stems(paths: Sequence[Path]) -> list[str]:
    """File stems, unique case-insensitively: a repeated stem gets ``_1``, ``_2``, ...

    Folders are ignored (``a/x.jpg``, ``b/x.png``, ``x_1.jpg`` -> ``x``, ``x_1``, ``x_1_1``);
    the names a labeled dataset gives its images (:func:`grounded_sam.export.files.flat_stems`).
    """
    from grounded_sam.export.files import flat_stems

    return flat_stems([Path(p).name for p in paths])


def format_table(dets: sv.Detections) -> str:
    """A fixed-width table of detections: index, label, confidence, box (xyxy), area."""
    from grounded_sam.export.records import detections_to_records

    if len(dets) == 0:
        return "  (no detections)"
    size = dets.mask.shape[1:] if dets.mask is not None else (0, 0)
    rows = detections_to_records(dets, size, include_masks=False)
    labels = [r["label"] for r in rows]
    width = max(5, *(len(x) for x in labels))
    header = f"  {'#':>3}  {'label':<{width}}  {'conf':>5}  {'box (x1, y1, x2, y2)':<26}"
    lines = [f"{header}  {'area':>8}"]
    for r in rows:
        box = ", ".join(f"{v:.0f}" for v in r["box"])
        conf = "-" if r["confidence"] is None else f"{r['confidence']:.3f}"
        lines.append(
            f"  {r['id']:>3}  {r['label']:<{width}}  {conf:>5}  [{box + ']':<25}  {r['area']:>8}"
        )
    return "\n".join(lines)
