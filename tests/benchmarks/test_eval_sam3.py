"""The quality harness with a tiny SAM 3 (numbers meaningless, mechanics checked)."""

from __future__ import annotations

from pathlib import Path

from benchmarks import eval as harness
from tests.benchmarks.test_eval import _check_report, write_synthetic_coco
from tests.sam.sam3_models import tiny_sam3_folder


def test_eval_with_sam3(tmp_path: Path) -> None:
    data = write_synthetic_coco(tmp_path / "synthetic")
    out = tmp_path / "out" / "eval.json"
    sam = str(tiny_sam3_folder())
    report = harness.main(["--data", str(data), "--sam", sam, "--device", "cpu",
                           "--top-k", "3", "--out", str(out)])  # fmt: skip
    _check_report(report, out, n_datasets=1, n_images=2)
    assert report["config"]["sam"] == sam
    assert report["config"]["clip"] is None  # SAM 3 grounds text itself
