"""``label_dataset`` / ``label --ray`` on a real local Ray: the same dataset as ``label``,
failures reported per image, and a killed driver resumed to the same dataset."""

from __future__ import annotations

import contextlib
import filecmp
import io
import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from grounded_sam.distributed import RAY_MISSING, label_dataset
from grounded_sam.distributed.shards import list_shards, read_rows
from grounded_sam.labeling import STATE_DIRNAME, export_dataset, label_folder
from tests.cli.conftest import ENTRY, cli_env, error_lines
from tests.distributed.conftest import CLASSES

SHARD_NAME = re.compile(r"^\d{8}T\d{6}-[0-9a-f]{8}-[0-9a-f]{32}\.parquet$")


def comparable(coco_file: Path) -> dict:
    doc = json.loads(coco_file.read_text())
    for image in doc["images"]:
        image.pop("date_captured")
    return {k: doc[k] for k in ("images", "annotations", "categories", "info")}


def shard_dir(out: Path) -> Path:
    return out / STATE_DIRNAME / "shards"


class RaisingEngine:
    """Loads the real engine on the worker; its index() raises on images of one size."""

    def __init__(self, kwargs: dict, bad_size: tuple[int, int]) -> None:
        self.kwargs = kwargs
        self.bad_size = bad_size

    def __call__(self):
        from grounded_sam import GroundedSAM

        gs = GroundedSAM.from_pretrained(**self.kwargs)
        index, bad = gs.index, self.bad_size

        def index_or_raise(image, **kw):
            if tuple(image.shape[:2]) == bad:
                raise RuntimeError("simulated worker failure on this image")
            return index(image, **kw)

        gs.index = index_or_raise
        return gs


class CrashingEngine(RaisingEngine):
    """Its worker process dies (as under the OOM killer) on images of one size."""

    def __call__(self):
        import os

        gs = super().__call__()
        index = gs.index

        def index_or_die(image, **kw):
            try:
                return index(image, **kw)
            except RuntimeError:
                os._exit(1)

        gs.index = index_or_die
        return gs


@pytest.fixture(scope="module")
def reference(folder, engine_kwargs, tmp_path_factory) -> Path:
    """The single-machine dataset (label_folder, in this process)."""
    import torch

    from grounded_sam import GroundedSAM

    torch.set_num_threads(1)  # as on a Ray worker with one CPU
    root, _ = folder
    gs = GroundedSAM.from_pretrained(**engine_kwargs)
    out = tmp_path_factory.mktemp("reference") / "dataset"
    report = label_folder(gs, root, CLASSES, out, "coco", progress=False)
    assert len(report.failed) == 1
    return out


@pytest.fixture(scope="module")
def ray_run(ray_address, folder, model_args, tmp_path_factory):
    """``grounded-sam label ... --ray ADDRESS`` through the CLI, in this process."""
    from grounded_sam.cli.main import main

    root, _ = folder
    out = tmp_path_factory.mktemp("ray") / "dataset"
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(["label", str(root), "-c", CLASSES, "-o", str(out), "--ray", ray_address,
                     "--concurrency", "1", "--batch-size", "2", *model_args])  # fmt: skip
    return code, stdout.getvalue(), stderr.getvalue(), out


def test_ray_dataset_is_the_single_machine_dataset(
    reference, ray_run, folder, engine_kwargs
) -> None:
    code, stdout, stderr, out = ray_run
    good = folder[1]
    ref = comparable(reference / "annotations.json")
    assert len(ref["annotations"]) >= len(good), "the reference should label something"
    assert comparable(out / "annotations.json") == ref
    assert sorted(p.name for p in (out / "images").iterdir()) == sorted(
        p.name for p in (reference / "images").iterdir()
    )
    for image in (reference / "images").iterdir():
        assert filecmp.cmp(image, out / "images" / image.name, shallow=False)
    assert code == 1, stderr[-2000:]  # the corrupt file
    assert f"{len(good)} of {len(good) + 1} image(s) labeled" in stdout
    assert f"({len(good)} now, 0 from an earlier run), 1 failed" in stdout
    assert "images/min" in stdout and "Traceback" not in stderr
    counts = {}
    for ann in ref["annotations"]:
        counts[ann["category_id"]] = counts.get(ann["category_id"], 0) + 1
    for cat in ref["categories"]:  # the per-class summary table
        assert re.search(rf"^  {cat['name']}\s+{counts.get(cat['id'], 0)}$", stdout, re.M)

    # The same exporter: re-exporting both as YOLO gives identical files.
    ref_copy = reference.parent / "reference-yolo"
    shutil.copytree(reference, ref_copy)
    export_dataset(ref_copy, "yolo")
    again = label_dataset(folder[0], CLASSES, out, "yolo", progress=False, **engine_kwargs)
    assert again.reused == len(good) and again.labeled == 0  # no Ray job needed
    for sub in ("labels", "scores"):
        for f in (ref_copy / sub).iterdir():
            assert f.read_text() == (out / sub / f.name).read_text(), f
    assert (ref_copy / "data.yaml").read_text() == (out / "data.yaml").read_text()


def test_corrupt_image_is_a_row_with_its_error_reported_and_counted(ray_run, folder) -> None:
    _, stdout, stderr, out = ray_run
    failed = [ln for ln in error_lines(stderr) if ln.startswith("grounded-sam: failed")]
    assert len(failed) == 1 and failed[0].startswith("grounded-sam: failed: sub/broken.jpg: ")
    assert "could not be decoded" in failed[0]
    assert error_lines(stderr)[-1] == (
        "grounded-sam: error: 1 image(s) failed and were left out: sub/broken.jpg"
    )
    assert "  failed: sub/broken.jpg: sub/broken.jpg could not be decoded" in stdout
    rows = {r.rel: r for r in read_rows(shard_dir(out))}
    assert sorted(rows) == sorted([*folder[1], "sub/broken.jpg"])
    assert rows["sub/broken.jpg"].error and rows["sub/broken.jpg"].detections == []
    assert all(rows[rel].error is None and rows[rel].height for rel in folder[1])
    shards = list_shards(shard_dir(out))
    assert shards and all(SHARD_NAME.match(p.name) for p in shards)
    assert len({p.name.split("-")[1] for p in shards}) == 1  # one run id


def test_a_worker_raising_on_one_image_loses_no_other_image(
    ray_address, folder, engine_kwargs, reference, tmp_path
) -> None:
    root, good = folder
    out = tmp_path / "dataset"
    engine = RaisingEngine(engine_kwargs, bad_size=(72, 80))  # img1.jpg
    report = label_dataset(root, CLASSES, out, concurrency=1, batch_size=8, progress=False,
                           engine=engine, **engine_kwargs)  # fmt: skip
    assert dict(report.failed)["img1.jpg"] == "simulated worker failure on this image"
    assert sorted(rel for rel, _ in report.failed) == ["img1.jpg", "sub/broken.jpg"]
    assert report.labeled == len(good) - 1
    ref = comparable(reference / "annotations.json")
    got = comparable(out / "annotations.json")
    ref_names = {i["id"]: i["file_name"] for i in ref["images"]}
    got_names = {i["id"]: i["file_name"] for i in got["images"]}
    assert sorted(got_names.values()) == sorted(n for n in ref_names.values() if n != "img1.jpg")

    def by_file(doc, names):
        out = {}
        for a in doc["annotations"]:
            out.setdefault(names[a["image_id"]], []).append(
                {k: a[k] for k in ("segmentation", "bbox", "score", "category_id")}
            )
        return out

    expected = by_file(ref, ref_names)
    expected.pop("img1.jpg", None)
    assert by_file(got, got_names) == expected


@pytest.mark.slow  # each crash restarts the actor (~15 s each here)
def test_an_actor_dying_on_one_image_loses_no_other_image(
    ray_address, folder, engine_kwargs, tmp_path
) -> None:
    root, good = folder
    out = tmp_path / "dataset"
    engine = CrashingEngine(engine_kwargs, bad_size=(72, 80))  # img1.jpg
    report = label_dataset(root, CLASSES, out, concurrency=1, batch_size=1, max_retries=1,
                           progress=False, engine=engine, **engine_kwargs)  # fmt: skip
    assert dict(report.failed)["img1.jpg"].startswith("no result: the worker labeling it died 2")
    assert report.labeled == len(good) - 1
    assert {r.rel for r in read_rows(shard_dir(out)) if r.error is None} == set(good) - {
        "img1.jpg"
    }


def test_killed_driver_resumes_to_the_same_dataset(
    ray_address, folder, engine_kwargs, model_args, reference, tmp_path
) -> None:
    root, good = folder
    out = tmp_path / "dataset"
    args = ["label", root, "-c", CLASSES, "-o", out, "--ray", ray_address,
            "--concurrency", "1", "--batch-size", "1", "--no-progress", *model_args]  # fmt: skip
    log = tmp_path / "killed.err"
    with log.open("w") as err:
        proc = subprocess.Popen([*ENTRY, *map(str, args)], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=err, env=cli_env())  # fmt: skip
    deadline = time.monotonic() + 240
    while not list_shards(shard_dir(out)) and proc.poll() is None:
        assert time.monotonic() < deadline, "no shard written: " + log.read_text()[-2000:]
        time.sleep(0.02)
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL, log.read_text()[-2000:]
    # Ray's error-level "constructor arguments in the object store" line (logged by the
    # driver when the actor pool starts, ray-project/ray#53727) is not shown without -v.
    assert "core_worker" not in log.read_text(), log.read_text()[-2000:]
    first = list_shards(shard_dir(out))
    assert 1 <= len(first) < len(good) + 1 and not (out / "annotations.json").exists()

    # A half-written shard (what a killed writer leaves) is never read.
    (shard_dir(out) / f".{first[0].name[:-8]}-partial.parquet.tmp").write_bytes(b"PAR1 junk")

    report = label_dataset(root, CLASSES, out, concurrency=1, batch_size=1, progress=False,
                           **engine_kwargs)  # fmt: skip
    assert [rel for rel, _ in report.failed] == ["sub/broken.jpg"]
    assert report.reused >= len(first) and report.reused + report.labeled == len(good)
    assert comparable(out / "annotations.json") == comparable(reference / "annotations.json")
    shards = list_shards(shard_dir(out))
    assert len({p.name for p in shards}) == len(shards)
    assert len({p.name.split("-")[1] for p in shards}) == 2  # two runs, two run ids


def test_missing_ray_says_what_to_install(folder, tmp_path, monkeypatch, capsys) -> None:
    from grounded_sam.cli.main import main

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    monkeypatch.setitem(sys.modules, "ray.data", None)
    with pytest.raises(ImportError) as info:
        label_dataset(folder[0], CLASSES, tmp_path / "out")
    assert str(info.value) == RAY_MISSING and "pip install -e '.[ray]'" in RAY_MISSING
    code = main(["label", str(folder[0]), "-c", CLASSES, "-o", str(tmp_path / "out"), "--ray"])
    assert code == 1
    assert capsys.readouterr().err == f"grounded-sam: error: {RAY_MISSING}\n"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("value", "message"),
    [("0", "expected N >= 1"), ("4-2", "1 <= MIN <= MAX"), ("x", "expected N or MIN-MAX")],
)
def test_bad_concurrency_is_a_usage_error(folder, tmp_path, capsys, value, message) -> None:
    from grounded_sam.cli.main import main

    argv = ["label", str(folder[0]), "-c", CLASSES, "-o", str(tmp_path), "--ray",
            "--concurrency", value]  # fmt: skip
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2 and message in capsys.readouterr().err


def test_concurrency_and_ray_address_parse() -> None:
    from grounded_sam.cli.main import build_parser

    base = ["label", "imgs", "-c", "a", "-o", "o"]
    args = build_parser().parse_args([*base, "--ray", "--concurrency", "2-8",
                                      "--gpus-per-worker", "0.5"])  # fmt: skip
    assert (args.ray, args.concurrency, args.gpus_per_worker) == ("local", (2, 8), 0.5)
    args = build_parser().parse_args(["label", "imgs", "-c", "a", "-o", "o", "--ray=auto"])
    assert (args.ray, args.concurrency, args.batch_size) == ("auto", None, 16)
    assert build_parser().parse_args(["label", "imgs", "-c", "a", "-o", "o"]).ray is None


def test_uri_without_ray_points_to_ray(tmp_path, capsys) -> None:
    from grounded_sam.cli.main import main

    assert main(["label", "s3://bucket/images", "-c", "a", "-o", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("grounded-sam: error: s3://bucket/images is a URI") and "--ray" in err


def test_a_busy_dataset_folder_is_refused_before_ray_starts(folder, tmp_path) -> None:
    from grounded_sam.labeling.lock import DatasetBusyError, dataset_lock

    pytest.importorskip("ray")
    with dataset_lock(tmp_path / "out"), pytest.raises(DatasetBusyError, match="in use"):
        label_dataset(folder[0], CLASSES, tmp_path / "out")
    assert not (tmp_path / "out" / STATE_DIRNAME).exists()
