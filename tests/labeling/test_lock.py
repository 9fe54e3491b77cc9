"""Exclusive dataset writes: an OS lock on DATASET_DIR, tested with two processes."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from grounded_sam.labeling import export_dataset, label_images, prepare_labeling
from grounded_sam.labeling.lock import LOCK_FILENAME, DatasetBusyError, dataset_lock
from tests.labeling.conftest import CLASSES, FakeEngine, config

REPO = Path(__file__).resolve().parents[2]

# Loads lock.py alone (not the grounded_sam package, which imports torch): starts in ~0.1 s.
HOLDER = textwrap.dedent(
    """
    import importlib.util, sys, time
    spec = importlib.util.spec_from_file_location("lock", "grounded_sam/labeling/lock.py")
    lock = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lock)
    with lock.dataset_lock(sys.argv[1]):
        print("locked", flush=True)
        time.sleep(float(sys.argv[2]))
    """
)

LABELER = textwrap.dedent(
    """
    import sys
    from grounded_sam.labeling import label_images, labeling_config, prepare_labeling
    from grounded_sam.labeling.lock import DatasetBusyError
    from grounded_sam import EverythingSettings
    from tests.labeling.conftest import CLASSES, FakeEngine
    import os, time
    folder, out, barrier = sys.argv[1], sys.argv[2], sys.argv[3]
    open(os.path.join(barrier, str(os.getpid())), "w").close()
    while len(os.listdir(barrier)) < 2:  # both processes imported: start together
        time.sleep(0.002)
    cfg = labeling_config(CLASSES, sam="fake-sam", clip="fake-clip",
                          proposal_settings=EverythingSettings())
    try:
        report = label_images(FakeEngine(), folder, prepare_labeling(folder, out), CLASSES, out,
                              "coco", config=cfg, progress=False, on_failure=lambda *a: None)
    except DatasetBusyError as exc:
        print("busy:", exc)
        sys.exit(3)
    print("labeled", report.labeled)
    """
)


def _hold(out: Path, seconds: float) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(out), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def test_second_run_fails_clearly_while_another_process_holds_the_folder(
    image_folder: Path, tmp_path: Path
) -> None:
    out = tmp_path / "ds"
    holder = _hold(out, 60)
    try:
        engine = FakeEngine()
        images = prepare_labeling(image_folder, out)
        with pytest.raises(
            DatasetBusyError, match=f"in use by another grounded-sam run \\(pid {holder.pid}\\)"
        ):
            label_images(
                engine, image_folder, images, CLASSES, out, config=config(), progress=False
            )
        assert engine.indexed == 0  # no double compute
    finally:
        holder.kill()
        holder.wait()
    # the OS dropped the lock with the killed process: the run goes ahead now
    report = label_images(
        FakeEngine(), image_folder, images, CLASSES, out, config=config(), progress=False,
        on_failure=lambda *a: None,
    )  # fmt: skip
    assert report.labeled == 4 and (out / LOCK_FILENAME).exists()
    holder = _hold(out, 60)
    try:
        with pytest.raises(DatasetBusyError):  # a re-export waits its turn too
            export_dataset(out, "yolo")
        assert not (out / "labels").exists()
    finally:
        holder.kill()
        holder.wait()


def test_lock_wait_waits_for_the_other_run(image_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    holder = _hold(out, 1.0)
    try:
        t0 = time.monotonic()
        with dataset_lock(out, wait=30):
            waited = time.monotonic() - t0
        assert holder.wait(timeout=30) == 0
        assert waited > 0.3  # it did wait for the holder (no upper bound: noisy machine)
    finally:
        holder.kill()
        holder.wait()


def test_two_concurrent_label_processes_never_interleave(
    image_folder: Path, tmp_path: Path
) -> None:
    out = tmp_path / "ds"
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", LABELER, str(image_folder), str(out), str(barrier)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        for _ in range(2)
    ]
    results = [(p.wait(timeout=120), p.stdout.read(), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _, _ in results)
    # Either one run was refused (they overlapped) or they ran one after the other.
    assert codes in ([0, 3], [0, 0]), results
    for code, stdout, _ in results:
        if code == 3:
            assert "busy:" in stdout and "in use by another grounded-sam run" in stdout
    labeled = sum(int(s.split()[-1]) for c, s, _ in results if c == 0)
    assert labeled == 4  # every image labeled exactly once over both runs
    doc = json.loads((out / "annotations.json").read_text())
    assert len(doc["images"]) == 4
