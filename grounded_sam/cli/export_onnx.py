"""``grounded-sam export-onnx``: SAM's image encoder and prompt decoder as ONNX graphs."""

from __future__ import annotations

import argparse
import logging

from grounded_sam.cli.common import HelpFormatter, check_out_dir

__all__ = ["add_parser", "run"]

logger = logging.getLogger(__name__)

DESCRIPTION = """\
Export a SAM checkpoint for onnxruntime / browsers / edge devices. Writes into --out:
  encoder.onnx     pixel_values (1, 3, S, S) -> image_embeddings (1, 256, S/16, S/16)
  decoder.onnx     image_embeddings, point_coords (B, N, 2), point_labels (B, N),
                   mask_input (B, 1, S/4, S/4), has_mask_input (1,)
                   -> low_res_logits (B, 4, S/4, S/4), iou_predictions (B, 4)
  sam_onnx.json    inputs, outputs, preprocessing and the coordinate transform
B (prompts) and N (points per prompt) are dynamic. Needs the onnx extra
(pip install 'grounded-sam[onnx]'). SAM (v1) checkpoints only.
"""

EXAMPLE = """\
example:
  grounded-sam export-onnx --sam facebook/sam-vit-base --out sam-onnx/
"""


def add_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``export-onnx`` command."""
    parser = commands.add_parser(
        "export-onnx",
        help="export SAM's encoder and prompt decoder as ONNX",
        description=DESCRIPTION,
        epilog=EXAMPLE,
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "--sam",
        metavar="MODEL",
        default=None,
        help="SAM checkpoint: Hugging Face id, alias (vit_b, vit_l, vit_h) or local folder "
        "(default facebook/sam-vit-base)",
    )
    parser.add_argument(
        "-o", "--out", metavar="DIR", required=True, default=argparse.SUPPRESS, help="output folder"
    )
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset")
    parser.add_argument(
        "--decoder-only", action="store_true", help="skip the (large, slow) image encoder"
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="log progress (-v) or debug (-vv)"
    )
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Export and print the written files."""
    from grounded_sam.export.onnx import export_sam_onnx
    from grounded_sam.sam.loading import DEFAULT_SAM

    out = check_out_dir(args.out)
    manifest = export_sam_onnx(
        args.sam or DEFAULT_SAM, out, opset=args.opset, encoder=not args.decoder_only
    )
    for path in sorted(manifest.parent.iterdir()):
        if path.suffix in (".onnx", ".json"):
            print(path)
    return 0
