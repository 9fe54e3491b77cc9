"""``label --ray`` with a tiny SAM 3: the same dataset as ``label`` on one machine, no CLIP."""

from __future__ import annotations

import contextlib
import filecmp
import io
from pathlib import Path

from grounded_sam.labeling import label_folder
from tests.distributed.conftest import CLASSES
from tests.distributed.test_labeling import comparable
from tests.sam.sam3_models import tiny_sam3_folder


def test_ray_dataset_with_sam3_is_the_single_machine_dataset(
    ray_address: str, folder: tuple[Path, list[str]], tmp_path: Path
) -> None:
    import torch

    from grounded_sam import GroundedSAM
    from grounded_sam.cli.main import main

    sam = str(tiny_sam3_folder())
    root, good = folder
    torch.set_num_threads(1)  # as on a Ray worker with one CPU
    gs = GroundedSAM.from_pretrained(sam=sam, device="cpu", threshold=0.0)
    assert gs.grounds_text
    reference = tmp_path / "reference"
    report = label_folder(gs, root, CLASSES, reference, "coco", top_k=1, progress=False)
    assert len(report.failed) == 1
    ref = comparable(reference / "annotations.json")
    assert len(ref["annotations"]) >= len(good), "the reference should label something"

    out = tmp_path / "ray"
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(["label", str(root), "-c", CLASSES, "-o", str(out), "--ray", ray_address,
                     "--concurrency", "1", "--batch-size", "2", "--top-k", "1",
                     "--sam", sam, "--device", "cpu", "--threshold", "0"])  # fmt: skip
    assert code == 1, stderr.getvalue()[-2000:]  # the corrupt file
    assert "Traceback" not in stderr.getvalue()
    assert comparable(out / "annotations.json") == ref
    for image in (reference / "images").iterdir():
        assert filecmp.cmp(image, out / "images" / image.name, shallow=False)
    info = ref["info"]
    assert info["description"] == "Labeled by grounded_sam (text-prompted SAM 3)"
    assert info["grounded_sam"]["clip"] == "" and info["grounded_sam"]["crop_style"] is None
