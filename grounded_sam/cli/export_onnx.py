"""``grounded-sam export-onnx``: a SAM-family image encoder and prompt decoder as ONNX graphs."""

from __future__ import annotations

import argparse
import json
import logging

from grounded_sam.cli.common import HelpFormatter, check_out_dir

__all__ = ["add_parser", "run"]

logger = logging.getLogger(__name__)

DESCRIPTION = """\
Export a SAM, HQ-SAM or SAM 2.1 checkpoint for onnxruntime / browsers / edge devices (the
family is read from the checkpoint's config; SAM 3 has no exporter). Writes into --out:
  encoder.onnx     pixel_values (1, 3, S, S) -> image_embeddings (1, 256, S/16, S/16)
                   [+ HQ-SAM: vit_features (1, S/16, S/16, D), D the ViT width;
                    + SAM 2: high_res_feats_0 (1, 32, S/4, S/4),
                             high_res_feats_1 (1, 64, S/8, S/8)]
  decoder.onnx     image_embeddings [+ the extra encoder outputs], point_coords (B, N, 2),
                   point_labels (B, N), mask_input (B, 1, S/4, S/4), has_mask_input (1,)
                   -> low_res_logits (B, 4, S/4, S/4), iou_predictions (B, 4)
                   [+ HQ-SAM: hq_logits (B, 1, S/4, S/4); + SAM 2: object_score_logits (B, 1)]
  sam_onnx.json    model_type, inputs, outputs, preprocessing, coordinate transform, prompt rules
B (prompts) and N (points per prompt) are dynamic; mask 0 is the single-mask output, 1-3
the multimask outputs. Files are moved into --out only when every graph was written;
--decoder-only also removes an encoder.onnx of an earlier export from --out, so the folder
never pairs the new decoder with an older encoder. Needs the onnx extra
(pip install -e '.[onnx]' from a clone).
"""

EXAMPLE = """\
examples:
  grounded-sam export-onnx --sam facebook/sam-vit-base --out sam-onnx/
  grounded-sam export-onnx --sam hq_vit_b --out sam-hq-onnx/
  grounded-sam export-onnx --sam sam2.1_t --out sam2-onnx/
  grounded-sam export-onnx --sam vit_h --out vit-h-decoder/ --decoder-only
"""


def add_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``export-onnx`` command."""
    parser = commands.add_parser(
        "export-onnx",
        help="export a SAM / HQ-SAM / SAM 2.1 encoder and prompt decoder as ONNX",
        description=DESCRIPTION,
        epilog=EXAMPLE,
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "--sam",
        metavar="MODEL",
        default=None,
        help="SAM, HQ-SAM or SAM 2.1 checkpoint: Hugging Face id, alias (vit_b, hq_vit_b, "
        "sam2.1_t, ...) or local folder (default facebook/sam-vit-base)",
    )
    parser.add_argument(
        "-o", "--out", metavar="DIR", required=True, default=argparse.SUPPRESS, help="output folder"
    )
    parser.add_argument(
        "--opset",
        type=int,
        default=17,
        help="ONNX opset, from 14 to the highest the installed torch's exporter writes (20 for "
        "torch 2.5+)",
    )
    parser.add_argument(
        "--decoder-only",
        action="store_true",
        help="skip the (large, slow) image encoder; removes an older encoder.onnx from --out",
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="log progress (-v) or debug (-vv)"
    )
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Export and print the written files."""
    from grounded_sam.deploy.onnx import export_sam_onnx
    from grounded_sam.deploy.onnx.exporter import check_opset
    from grounded_sam.sam.loading import DEFAULT_SAM

    check_opset(args.opset)  # before any folder or model is touched
    out = check_out_dir(args.out)
    manifest = export_sam_onnx(
        args.sam or DEFAULT_SAM, out, opset=args.opset, encoder=not args.decoder_only
    )
    written = json.loads(manifest.read_text())["files"]
    for name in sorted(written.values()):
        print(manifest.parent / name)
    print(manifest)
    return 0
