"""Every knob has a bound: the worst cases of a hostile caller end in a clean ValueError.

They run in a subprocess whose address space is capped with ``resource.setrlimit`` (a few
GiB above what the loaded tiny models use): before the bounds these cases reached 21.8 GB
(``crop_n_layers=99`` on a 1x1 image), 12.6 GB (1000 boxes on 4000x3000), 40 GB (a tampered
index) or never ended (``refine=10**9``). Under the cap a regression shows up as a
MemoryError / a killed process instead of the expected message.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from grounded_sam import EverythingSettings, limits

REPO = Path(__file__).resolve().parents[1]

WORST_CASES = textwrap.dedent(
    """
    import json, resource, sys
    import numpy as np
    import torch
    from grounded_sam import EverythingSettings, GroundedSAM, ImageIndex

    torch.set_num_threads(1)
    sam, clip, index_path, tampered_path = sys.argv[1:5]
    gs = GroundedSAM.from_pretrained(
        sam=sam, clip=clip, device="cpu", threshold=0.0,
        proposal_settings=EverythingSettings(points_per_side=4, pred_iou_thresh=0.0,
                                             stability_score_thresh=0.5))
    index = ImageIndex.load(index_path)
    big = np.zeros((3000, 4000, 3), dtype=np.uint8)
    big_index = None
    with open("/proc/self/status") as f:
        vm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize"))
    cap = vm + (3 << 30)  # 3 GiB above what is mapped now
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    cases = {
        "crop_n_layers=99 on 1x1": lambda: gs.everything(
            np.zeros((1, 1, 3), np.uint8), crop_n_layers=99),
        "refine=10**9": lambda: gs.query(index, "square", refine=10**9),
        "1000 boxes on 4000x3000": lambda: gs.predict(
            big, box=np.tile([[0, 0, 4000, 3000]], (1000, 1))),
        "100 boxes on 4000x3000": lambda: gs.predict(
            big, box=np.tile([[0, 0, 4000, 3000]], (100, 1))),
        "tampered original_size": lambda: ImageIndex.load(tampered_path),
        "5000 phrases": lambda: gs.query(index, ",".join(f"p{i}" for i in range(5000))),
        "surrogate phrase": lambda: gs.segment(np.zeros((32, 32, 3), np.uint8), "\\udcffx"),
        "points_per_side=100000": lambda: gs.everything(index, points_per_side=100000),
        "points_per_batch=10**7": lambda: gs.everything(index, points_per_batch=10**7),
        "20000x20000 array": lambda: gs.index(
            np.lib.stride_tricks.as_strided(np.zeros(1, np.uint8), (20000, 20000, 3), (0, 0, 0))),
    }
    out = {}
    for name, call in cases.items():
        try:
            call()
            out[name] = "no error"
        except ValueError as exc:
            out[name] = "ValueError: " + str(exc)
        except BaseException as exc:  # MemoryError, RuntimeError from torch, ...
            out[name] = f"{type(exc).__name__}: {exc}"[:300]
    # a sane call still works under the cap
    dets = gs.predict(big, box=[[100, 100, 2000, 1500]], multimask_output=False)
    out["sane predict"] = f"ok {len(dets)}"
    print(json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def index_files(tiny_gs, tmp_path_factory) -> tuple[Path, Path]:
    import torch

    folder = tmp_path_factory.mktemp("limits")
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    image[10:30, 10:40] = (250, 200, 20)
    path = tiny_gs.index(image).save(folder / "ok.gsindex")
    blob = torch.load(path, weights_only=True)
    blob["original_size"] = [100_000, 100_000]
    tampered = folder / "tampered.gsindex"
    torch.save(blob, tampered)
    return path, tampered


@pytest.mark.timeout(300)
def test_worst_cases_under_a_memory_cap_are_clean_errors(tiny_model_specs, index_files) -> None:
    sam, clip = tiny_model_specs
    proc = subprocess.run(
        [sys.executable, "-c", WORST_CASES, sam, clip, *map(str, index_files)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=280,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]  # not killed, no crash
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    expected = {
        "crop_n_layers=99 on 1x1": "crop_n_layers must be <= 3, got 99 (layer i adds 4**i",
        "refine=10**9": "refine must be in [0, 8], got 1000000000",
        "1000 boxes on 4000x3000": "Got 1000 boxes; at most 256 per call",
        "100 boxes on 4000x3000": "give at most 29 boxes per call here",
        "tampered original_size": "'original_size' must be two integers in [1, 20000]",
        "5000 phrases": "More than 128 phrases in one prompt",
        "surrogate phrase": "lone surrogate U+DCFF",
        "points_per_side=100000": "points_per_side must be <= 128",
        "points_per_batch=10**7": "points_per_batch must be <= 1024",
        "20000x20000 array": "the limit is 50,000,000 pixels",
    }
    for name, text in expected.items():
        assert got[name].startswith("ValueError: ") and text in got[name], (name, got[name])
    assert got["sane predict"] == "ok 1"


def test_settings_bounds_state_the_reason() -> None:
    with pytest.raises(ValueError, match="crop_n_layers must be <= 3, got 4"):
        EverythingSettings(crop_n_layers=4)
    assert EverythingSettings(crop_n_layers=limits.MAX_CROP_N_LAYERS).crop_n_layers == 3
    with pytest.raises(ValueError, match="points_per_side must be <= 128"):
        EverythingSettings(points_per_side=129)


def test_mask_input_errors(tiny_gs) -> None:
    image = np.zeros((40, 50, 3), np.uint8)
    side = tiny_gs.predictor.transform.low_res_size
    with pytest.raises(ValueError, match=r"got shape \(2, 7\)"):  # the shape the user gave
        tiny_gs.predict(image, points=[[5, 5]], mask_input=np.zeros((2, 7)))
    bad = np.zeros((1, side, side), np.float32)
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="mask_input contains NaN"):
        tiny_gs.predict(image, points=[[5, 5]], mask_input=bad)


def test_query_knobs_through_the_api(tiny_gs, index_files) -> None:
    from grounded_sam import ImageIndex

    index = ImageIndex.load(index_files[0])
    dets = tiny_gs.query(index, "square", threshold=np.float32(0.0), top_k=np.int64(2))
    assert len(dets) > 0
    with pytest.raises(ValueError, match="top_k must be an integer, got True"):
        tiny_gs.query(index, "square", top_k=True)
    with pytest.raises(ValueError, match="min_region_area must be >= 0, got -1"):
        tiny_gs.query(index, "square", min_region_area=-1)


def test_everything_masks_stay_within_the_mask_budget(tiny_gs, monkeypatch) -> None:
    image = np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)
    loose = {"points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}
    dets = tiny_gs.everything(image, **loose)
    assert len(dets) >= 1  # within the budget the masks come back
    monkeypatch.setattr(limits, "MAX_MASK_PIXELS", 40 * 50 - 1)  # not even one mask fits
    with pytest.raises(ValueError, match=r"automatic masks of a 50x40 image.*at most 1 masks"):
        tiny_gs.everything(image, **loose)


def test_grid_masks_kept_before_nms_stay_within_their_budget(tiny_gs, monkeypatch) -> None:
    image = np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)
    loose = {"points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}
    assert len(tiny_gs.everything(image, **loose)) >= 1  # within the budget: masks come back
    monkeypatch.setattr(limits, "MAX_PROPOSAL_LOGIT_BYTES", 1)  # not even one mask fits
    with pytest.raises(ValueError, match=r"Too many masks pass the filters.*GiB.*Raise "
                       r"pred_iou_thresh \(now 0\) or stability_score_thresh \(now 0\), or "
                       r"lower points_per_side \(now 4\)"):  # fmt: skip
        tiny_gs.everything(image, **loose)
    with pytest.raises(ValueError, match="Too many masks pass the filters"):
        tiny_gs.index(image, proposal_settings=EverythingSettings(**loose))
