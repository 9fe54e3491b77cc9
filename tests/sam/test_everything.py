"""Tests of "segment everything" (``grounded_sam.sam.everything``).

Parity with Meta's ``SamAutomaticMaskGenerator``
-----------------------------------------------
Both sides get identical weights (our transformers ``SamModel`` converted key by key into Meta's
``Sam`` by ``tests/sam/reference.py``), the same image, the same grid and the same thresholds.
They are not expected to be bit-identical: Meta upsamples every grid mask to full resolution
before filtering, we filter at the decoder's resolution (stability counted on a 2x sub-pixel
bilinear grid, see ``grounded_sam.sam.stability``; boxes from the low-res masks). A mask whose
stability score or box IoU lies within ~0.01-0.03 of a threshold can therefore be kept on one
side and dropped on the other; everything else must agree exactly. So each case checks:

* the reference output is non-trivial (>= 2 masks, none empty or full, not all identical);
* our mask count is within ``COUNT_TOL`` of Meta's;
* at least ``MATCH_MIN`` (75 %; one miss always allowed) of Meta's masks have a partner among
  ours that is the same proposal: mask IoU >= 0.9, same grid point, same crop box and predicted
  IoU within 1e-4 (pairs are matched greedily by IoU, same-proposal pairs first);
* every such pair agrees in full: mask IoU >= 0.99 (same logits, same upsampling: only
  float-rounding flips), bbox within 1 px, area within 1 %, stability within ``STAB_TOL``.

Run ``GS_EVERYTHING_REPORT=1 pytest tests/sam/test_everything.py -s`` to print the measured
agreement per case.

Why a "structured" tiny SAM
---------------------------
The stock tiny random SAM (``save_tiny_sam``) decodes every prompt into a high-frequency texture
(the transposed convolutions of the output upscaling imprint a 4-pixel checkerboard) covering
30-80 % of the image; every box is the whole image, so box NMS leaves one single mask on both
sides, which would make any comparison pass. :func:`structure_tiny_sam` re-arranges a copy of
those random weights (see its docstring) so that masks follow image content: a grid then gives
several distinct, compact masks per image on both sides.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools import mask as coco_mask

from grounded_sam.inputs import load_image
from grounded_sam.sam.everything import (
    EverythingSettings,
    Proposals,
    generate_proposals,
    proposals_to_records,
)
from grounded_sam.sam.predictor import SamPredictor
from grounded_sam.utils.masks import batched_mask_iou, decode_rle

from . import everything_scenes
from .everything_scenes import UNIT, proposals_with_crops, shapes_scene

DATA_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data"
PHOTO_DIR = DATA_DIR / "coco-val-mini" / "images"

REPORT = bool(os.environ.get("GS_EVERYTHING_REPORT"))

# Our count may differ from Meta's by this many masks (borderline flips, see module docstring).
COUNT_TOL = 2
# Fraction of Meta's masks that must be found among ours as the same proposal (rounded up,
# but one miss is always allowed). Measured: 100 % on every case below; 95 % (196 of 206
# masks) over a wider sweep of 80 image/setting combinations (12 synthetic scenes, 5 photos;
# plain, pred-IoU filter, crops, small-region removal), where each miss was one borderline
# flip in a case of 2-4 masks. With 3-10 masks per case one flip costs 10-33 %.
MATCH_MIN = 0.75
# |our stability (2x sub-pixel) - Meta's (full resolution)| for the same proposal.
STAB_TOL = 0.05


# -- a tiny SAM whose random masks have structure ----------------------------------------------


@pytest.fixture(scope="module")
def structured_model(sam_model):
    """A copy of the package's tiny SAM with :func:`structure_tiny_sam` applied."""
    return everything_scenes.structured_model(sam_model)


@pytest.fixture(scope="module")
def structured_predictor(structured_model) -> SamPredictor:
    return SamPredictor(structured_model)


@pytest.fixture(scope="module")
def meta_structured(structured_model):
    """Meta's ``Sam`` carrying exactly the structured model's weights."""
    pytest.importorskip("segment_anything")
    from .reference import meta_sam_from_hf

    return meta_sam_from_hf(structured_model)


# -- images ------------------------------------------------------------------------------------


def real_photo() -> np.ndarray:
    """The first COCO photo of the shared data folder (skips when absent, as in a clone)."""
    photos = sorted(PHOTO_DIR.glob("*.jpg")) if PHOTO_DIR.is_dir() else []
    if not photos:
        pytest.skip(f"no real photo under {PHOTO_DIR}")
    return load_image(photos[0])


IMAGES = {
    "shapes_150x230": lambda: shapes_scene(150, 230, seed=2),
    "shapes_230x150": lambda: shapes_scene(230, 150, seed=0),
    "photo": real_photo,
}


# -- running both sides and comparing ----------------------------------------------------------


def run_ours(predictor, image, output_mode="binary_mask", **settings) -> list[dict]:
    cfg = EverythingSettings(**settings)
    proposals = generate_proposals(predictor, image, cfg)
    return proposals_to_records(
        proposals,
        output_mode=output_mode,
        min_mask_region_area=cfg.min_mask_region_area,
        nms_thresh=max(cfg.box_nms_thresh, cfg.crop_nms_thresh),
    )


def run_meta(meta_sam, image, output_mode="binary_mask", **settings) -> list[dict]:
    from segment_anything import SamAutomaticMaskGenerator

    return SamAutomaticMaskGenerator(meta_sam, output_mode=output_mode, **settings).generate(image)


def decode(record: dict) -> np.ndarray:
    """A record's mask as (H, W) bool, whatever its output mode."""
    seg = record["segmentation"]
    if isinstance(seg, dict):
        if isinstance(seg["counts"], str):
            return coco_mask.decode(seg).astype(bool)  # pycocotools itself for COCO RLE
        return decode_rle(seg)
    return np.asarray(seg, dtype=bool)


def pairwise_iou(a: list[np.ndarray], b: list[np.ndarray]) -> np.ndarray:
    if not a or not b:
        return np.zeros((len(a), len(b)))
    ta = torch.from_numpy(np.stack(a))
    tb = torch.from_numpy(np.stack(b))
    return batched_mask_iou(ta, tb).double().numpy()


def assert_nontrivial(records: list[dict]) -> None:
    """The reference made real masks: >= 2, none empty or full, more than one distinct."""
    assert len(records) >= 2, f"reference produced {len(records)} mask(s): nothing to compare"
    masks = [decode(r) for r in records]
    coverage = [m.mean() for m in masks]
    assert min(coverage) > 0, f"reference produced an empty mask (coverage {coverage})"
    assert max(coverage) < 1, f"reference produced a full mask (coverage {coverage})"
    distinct = {np.packbits(m).tobytes() for m in masks}
    assert len(distinct) > 1, "reference produced one single mask"


def same_prompt(a: dict, b: dict) -> bool:
    """Decoded from the same grid point in the same crop (and the same multimask output)."""
    return (
        np.allclose(a["point_coords"], b["point_coords"], atol=1e-3)
        and list(a["crop_box"]) == list(b["crop_box"])
        and abs(a["predicted_iou"] - b["predicted_iou"]) <= 1e-4
    )


@dataclass
class Agreement:
    n_ref: int
    n_ours: int
    same: list[tuple[int, int, float]] = field(default_factory=list)  # (ref, ours, mask IoU)
    substitutes: int = 0  # IoU >= 0.9 but another prompt's mask (a near-duplicate won)

    @property
    def fraction(self) -> float:
        return len(self.same) / self.n_ref if self.n_ref else 1.0


def match(ours: list[dict], ref: list[dict]) -> Agreement:
    """Greedy one-to-one matching of masks by IoU >= 0.9, same-prompt pairs first."""
    iou = pairwise_iou([decode(r) for r in ref], [decode(o) for o in ours])
    candidates = [
        (same_prompt(ref[i], ours[j]), iou[i, j], i, j)
        for i in range(len(ref))
        for j in range(len(ours))
        if iou[i, j] >= 0.9
    ]
    out = Agreement(len(ref), len(ours))
    used_r, used_o = set(), set()
    for same, value, i, j in sorted(candidates, reverse=True):
        if i in used_r or j in used_o:
            continue
        used_r.add(i)
        used_o.add(j)
        if same:
            out.same.append((i, j, float(value)))
        else:
            out.substitutes += 1
    return out


def check_parity(case: str, ours: list[dict], ref: list[dict]) -> Agreement:
    assert_nontrivial(ref)
    agreement = match(ours, ref)
    stab_diff = max(
        (abs(ours[j]["stability_score"] - ref[i]["stability_score"]) for i, j, _ in agreement.same),
        default=0.0,
    )
    if REPORT:
        print(
            f"\n[everything parity] {case}: Meta {agreement.n_ref} masks, ours "
            f"{agreement.n_ours}; same proposal {len(agreement.same)}/{agreement.n_ref} "
            f"({agreement.fraction:.0%}), near-duplicate substitutes {agreement.substitutes}, "
            f"min mask IoU {min((v for *_, v in agreement.same), default=1.0):.4f}, "
            f"max |stability diff| {stab_diff:.4f}"
        )
    assert abs(agreement.n_ours - agreement.n_ref) <= COUNT_TOL, (
        f"{case}: {agreement.n_ours} masks vs Meta's {agreement.n_ref}"
    )
    needed = min(math.ceil(MATCH_MIN * agreement.n_ref), agreement.n_ref - 1)
    assert len(agreement.same) >= needed, (
        f"{case}: only {len(agreement.same)}/{agreement.n_ref} of Meta's masks found"
    )
    for i, j, value in agreement.same:
        r, o = ref[i], ours[j]
        assert value >= 0.99, f"{case}: same proposal, mask IoU {value:.4f}"
        assert np.allclose(o["point_coords"], r["point_coords"], atol=1e-3)
        assert [float(v) for v in o["crop_box"]] == [float(v) for v in r["crop_box"]]
        assert o["predicted_iou"] == pytest.approx(r["predicted_iou"], abs=1e-4)
        assert np.abs(np.subtract(o["bbox"], r["bbox"])).max() <= 1.0, (o["bbox"], r["bbox"])
        assert abs(o["area"] - r["area"]) <= 0.01 * r["area"] + 1
        assert abs(o["stability_score"] - r["stability_score"]) <= STAB_TOL
    return agreement


# -- parity with Meta's automatic mask generator -----------------------------------------------

BASE = {
    "points_per_side": 12,
    "pred_iou_thresh": 0.0,
    "stability_score_thresh": 0.5,
    "box_nms_thresh": 0.9,
}

# (case id, image, generator settings). Measured agreement (GS_EVERYTHING_REPORT=1) in the
# module's final report; all cases were chosen so that Meta's output has several masks.
PARITY_CASES = [
    ("shapes_150x230-iou", "shapes_150x230", {**BASE, "pred_iou_thresh": 0.02}),
    ("shapes_150x230", "shapes_150x230", BASE),
    (
        "shapes_230x150",
        "shapes_230x150",
        {**BASE, "stability_score_thresh": 0.4, "box_nms_thresh": 0.8},
    ),
    ("photo", "photo", BASE),
    ("shapes_150x230-small-regions", "shapes_150x230", {**BASE, "min_mask_region_area": 300}),
]


@pytest.mark.parametrize(
    ("image_id", "settings"),
    [pytest.param(image_id, settings, id=case) for case, image_id, settings in PARITY_CASES],
)
def test_parity_with_meta(request, structured_predictor, meta_structured, image_id, settings):
    image = IMAGES[image_id]()
    ours = run_ours(structured_predictor, image, **settings)
    ref = run_meta(meta_structured, image, **settings)
    check_parity(request.node.callspec.id, ours, ref)


def test_parity_small_region_removal_acts(structured_predictor, meta_structured):
    """The min_mask_region_area case is not vacuous: Meta's clean-up changes its output."""
    image = IMAGES["shapes_150x230"]()
    plain = run_meta(meta_structured, image, **BASE)
    cleaned = run_meta(meta_structured, image, **BASE, min_mask_region_area=300)
    assert len(cleaned) < len(plain) or any(
        (decode(a) != decode(b)).any() for a, b in zip(plain, cleaned, strict=False)
    )


def test_parity_with_crops(structured_predictor, meta_structured):
    image = IMAGES["shapes_230x150"]()
    settings = {**BASE, "points_per_side": 8, "pred_iou_thresh": 0.02, "crop_n_layers": 1}
    ours = run_ours(structured_predictor, image, **settings)
    ref = run_meta(meta_structured, image, **settings)
    whole = [0.0, 0.0, float(image.shape[1]), float(image.shape[0])]
    from_crops = {i for i, r in enumerate(ref) if [float(v) for v in r["crop_box"]] != whole}
    assert from_crops, "no reference mask comes from a crop: the crop case would be vacuous"
    agreement = check_parity("crops", ours, ref)
    # masks decoded in a crop are found as the same proposals (same crop box) on our side
    found = [i for i, _, _ in agreement.same if i in from_crops]
    assert len(found) >= min(math.ceil(MATCH_MIN * len(from_crops)), len(from_crops) - 1)


@pytest.mark.parametrize("output_mode", ["coco_rle", "uncompressed_rle"])
def test_parity_rle_output(structured_predictor, meta_structured, output_mode):
    image = IMAGES["shapes_150x230"]()
    ours = run_ours(structured_predictor, image, output_mode=output_mode, **BASE)
    ref = run_meta(meta_structured, image, output_mode=output_mode, **BASE)
    agreement = check_parity(output_mode, ours, ref)
    identical = sum(ours[j]["segmentation"] == ref[i]["segmentation"] for i, j, _ in agreement.same)
    if REPORT:
        print(f"  {output_mode}: {identical}/{len(agreement.same)} RLEs identical to Meta's")
    # Same logits and upsampling: only a float-rounding pixel flip could change an RLE.
    assert identical >= len(agreement.same) - 1
    json.dumps(ours)


# -- settings ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field_name", "value", "message"),
    [
        ("points_per_side", 0, "points_per_side must be >= 1"),
        ("points_per_side", 2.5, "points_per_side must be an integer"),
        ("points_per_side", True, "points_per_side must be an integer"),
        ("points_per_batch", 0, "points_per_batch must be >= 1"),
        ("pred_iou_thresh", 1.5, "pred_iou_thresh must be a number in [0, 1]"),
        ("pred_iou_thresh", -0.1, "pred_iou_thresh must be a number in [0, 1]"),
        ("stability_score_thresh", float("nan"), "stability_score_thresh must be a number"),
        ("stability_score_offset", -1.0, "stability_score_offset must be a finite number >= 0"),
        ("stability_score_offset", float("inf"), "stability_score_offset must be a finite"),
        ("box_nms_thresh", "0.7", "box_nms_thresh must be a number in [0, 1]"),
        ("crop_n_layers", -1, "crop_n_layers must be >= 0"),
        ("crop_nms_thresh", 2, "crop_nms_thresh must be a number in [0, 1]"),
        ("crop_overlap_ratio", 1.0, "crop_overlap_ratio must be a number in [0, 1)"),
        ("crop_n_points_downscale_factor", 0, "crop_n_points_downscale_factor must be >= 1"),
        ("min_mask_region_area", -5, "min_mask_region_area must be >= 0"),
        ("max_proposals", 0, "max_proposals must be None or an integer >= 1"),
        ("max_proposals", 3.0, "max_proposals must be None or an integer >= 1"),
    ],
)
def test_settings_validation(field_name, value, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        EverythingSettings(**{field_name: value})


def test_settings_defaults_are_metas():
    import inspect

    pytest.importorskip("segment_anything")
    from segment_anything import SamAutomaticMaskGenerator

    meta_defaults = {
        name: p.default
        for name, p in inspect.signature(SamAutomaticMaskGenerator).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    ours = EverythingSettings()
    for name in (
        "points_per_side",
        "points_per_batch",
        "pred_iou_thresh",
        "stability_score_thresh",
        "stability_score_offset",
        "box_nms_thresh",
        "crop_n_layers",
        "crop_nms_thresh",
        "crop_overlap_ratio",
        "crop_n_points_downscale_factor",
        "min_mask_region_area",
    ):
        assert getattr(ours, name) == meta_defaults[name], name
    EverythingSettings(max_proposals=np.int64(3), points_per_side=np.int64(4))  # numpy ints ok


# -- proposals ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scene_230x150() -> np.ndarray:
    return shapes_scene(230, 150, seed=0)


@pytest.fixture(scope="module")
def crop_proposals(structured_predictor, scene_230x150) -> Proposals:
    return proposals_with_crops(structured_predictor, scene_230x150)


def test_proposals_fields(crop_proposals, structured_predictor, scene_230x150):
    p = crop_proposals
    n, side = len(p), structured_predictor.transform.low_res_size
    assert n >= 3
    assert (p.crop_index > 0).any() and (p.crop_index == 0).any()
    assert p.low_res_logits.shape == (n, side, side)
    assert p.boxes.shape == (n, 4) and p.point_coords.shape == (n, 2)
    assert p.predicted_iou.shape == p.stability_score.shape == p.crop_index.shape == (n,)
    assert p.crop_boxes.shape == (5, 4) and len(p.crop_input_sizes) == 5
    assert p.original_size == scene_230x150.shape[:2]
    # sorted by predicted IoU, stability above its threshold
    assert (p.predicted_iou[:-1] >= p.predicted_iou[1:]).all()
    assert (p.stability_score >= 0.5).all()
    # each proposal's point and box lie in its crop (original pixels)
    crop = p.crop_boxes[p.crop_index].float()
    assert (p.point_coords >= crop[:, :2]).all() and (p.point_coords < crop[:, 2:]).all()
    assert (p.boxes[:, :2] >= crop[:, :2]).all() and (p.boxes[:, 2:] < crop[:, 2:]).all()


def test_point_coords_are_grid_points(structured_predictor, scene_230x150):
    from grounded_sam.utils.grid import build_point_grid

    p = generate_proposals(structured_predictor, scene_230x150, EverythingSettings(**UNIT))
    h, w = scene_230x150.shape[:2]
    grid = torch.from_numpy(build_point_grid(8) * np.array([[w, h]])).float()
    dist = torch.cdist(p.point_coords, grid).amin(1)
    assert dist.max() < 1e-3


def test_max_proposals(structured_predictor, scene_230x150):
    everything = generate_proposals(structured_predictor, scene_230x150, EverythingSettings(**UNIT))
    assert len(everything) >= 3
    top = generate_proposals(
        structured_predictor, scene_230x150, EverythingSettings(**UNIT, max_proposals=2)
    )
    assert len(top) == 2
    assert torch.equal(top.predicted_iou, everything.predicted_iou[:2])
    assert torch.equal(top.low_res_logits, everything.low_res_logits[:2])


def test_batch_size_does_not_change_the_result(structured_predictor, scene_230x150):
    a = generate_proposals(structured_predictor, scene_230x150, EverythingSettings(**UNIT))
    b = generate_proposals(
        structured_predictor, scene_230x150, EverythingSettings(**UNIT, points_per_batch=7)
    )
    assert torch.equal(a.point_coords, b.point_coords)
    assert torch.allclose(a.predicted_iou, b.predicted_iou, atol=1e-5)


def test_empty_result(structured_predictor, scene_230x150):
    settings = EverythingSettings(points_per_side=4, pred_iou_thresh=1.0)
    p = generate_proposals(structured_predictor, scene_230x150, settings)
    h, w = scene_230x150.shape[:2]
    side = structured_predictor.transform.low_res_size
    assert len(p) == 0
    assert p.low_res_logits.shape == (0, side, side) and p.boxes.shape == (0, 4)
    assert p.frame_masks().shape == (0, *p.frame_size())
    assert p.full_masks().shape == (0, h, w)
    for mode in ("binary_mask", "coco_rle"):
        assert proposals_to_records(p, output_mode=mode, min_mask_region_area=10) == []


def test_bad_inputs(structured_predictor, scene_230x150):
    settings = EverythingSettings(points_per_side=2)
    with pytest.raises(ValueError, match="uint8"):
        generate_proposals(structured_predictor, scene_230x150.astype(np.float32), settings)
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        generate_proposals(structured_predictor, scene_230x150[..., 0], settings)
    other = structured_predictor.encode(scene_230x150[:100])
    with pytest.raises(ValueError, match="embedding was computed for a 100x150 image"):
        generate_proposals(structured_predictor, scene_230x150, settings, embedding=other)


# -- the kept embedding is reused ---------------------------------------------------------------


class CountingPredictor(SamPredictor):
    """Counts image-encoder passes."""

    def __init__(self, model) -> None:
        super().__init__(model)
        self.encoded: list[tuple[int, ...]] = []

    def _encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        self.encoded.append(tuple(pixels.shape))
        return super()._encode_pixels(pixels)


@pytest.mark.parametrize("crop_n_layers", [0, 1])
def test_given_embedding_is_reused(structured_model, scene_230x150, crop_n_layers):
    predictor = CountingPredictor(structured_model)
    embedding = predictor.encode(scene_230x150)
    assert len(predictor.encoded) == 1
    settings = EverythingSettings(**UNIT, crop_n_layers=crop_n_layers)
    with_embedding = generate_proposals(predictor, scene_230x150, settings, embedding=embedding)
    n_crops = 1 + 4 * crop_n_layers
    # no encoder pass for crop 0, one per other crop
    assert len(predictor.encoded) == 1 + (n_crops - 1)
    predictor.encoded.clear()
    without = generate_proposals(predictor, scene_230x150, settings)
    assert len(predictor.encoded) == n_crops
    assert torch.equal(with_embedding.low_res_logits, without.low_res_logits)
