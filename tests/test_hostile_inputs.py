"""Hostile inputs, round 3 (issue 23): hangs, leaks, silent overwrites and unbounded work.

Each test names the attack it replays. Where memory or work is the point, the bound is
checked by counting (samples taken, bytes allocated) or under a memory cap in a subprocess,
never by wall time.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- CLIP regions
def _count_roi_samples(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Wrap ``torchvision.ops.roi_align`` to count the bilinear samples it takes.

    With ``sampling_ratio=-1`` (adaptive) every output pixel of a roi averages
    ``ceil(roi_h / out_h) * ceil(roi_w / out_w)`` samples.
    """
    import torchvision.ops

    real = torchvision.ops.roi_align
    counted = [0]

    def counting(inp, rois, output_size, spatial_scale=1.0, sampling_ratio=-1, aligned=False):
        out_h, out_w = output_size
        r = rois.detach().double() * spatial_scale
        rh = (r[:, 4] - r[:, 2]).clamp_min(0)
        rw = (r[:, 3] - r[:, 1]).clamp_min(0)
        per_pixel = torch.ceil(rh / out_h).clamp_min(1) * torch.ceil(rw / out_w).clamp_min(1)
        counted[0] += int(per_pixel.sum()) * out_h * out_w
        return real(inp, rois, output_size, spatial_scale, sampling_ratio, aligned)

    monkeypatch.setattr(torchvision.ops, "roi_align", counting)
    return counted


@pytest.mark.parametrize(
    ("height", "width", "frame"),
    [(64, 64, (256, 256)), (1, 1, (256, 256)), (1, 20000, (1, 256)), (20000, 1, (256, 1))],
)
def test_degenerate_images_score_within_a_work_bound(
    tiny_model_specs, monkeypatch, height: int, width: int, frame: tuple[int, int]
) -> None:
    # 1x1 and 1x20000 images took 21-47 s in CLIP scoring (64x64: 0.02 s): the regions of
    # such images span thousands of mask-frame pixels per output pixel (a 1x20000 image's
    # square regions cover 24000 rows of its one-row frame), and adaptive roi_align took a
    # sample for each. The mask frame is now sampled from a pyramid level, as the image is.
    from grounded_sam.clip import load_clip
    from grounded_sam.clip.regions import MAX_MASK_SAMPLES_PER_AXIS, MAX_SAMPLES_PER_AXIS

    scorer = load_clip(tiny_model_specs[1], device="cpu")
    out_h, out_w = scorer.image_size
    n = 12
    image = torch.randint(0, 256, (3, height, width), dtype=torch.uint8)
    boxes = torch.tensor([[0.0, 0.0, width, height]] * n)
    boxes[1::2, 2] = max(1.0, width / 3)  # some partial boxes too
    masks = torch.ones((n, *frame), dtype=torch.bool)
    counted = _count_roi_samples(monkeypatch)
    emb = scorer.encode_regions(image, boxes, masks)
    assert emb.shape == (n, scorer.embed_dim) and torch.isfinite(emb).all()
    levels = 2 * math.ceil(math.log2(max(height, width) * 2 + 16))  # one-sample dummy rois
    per_region = MAX_MASK_SAMPLES_PER_AXIS**2 + MAX_SAMPLES_PER_AXIS**2 + levels
    assert counted[0] <= n * out_h * out_w * per_region, counted[0] / (n * out_h * out_w)


# --------------------------------------------------------------------------- special files
@pytest.fixture
def no_hang():
    """Fail (instead of hanging the run) when the test blocks for more than 20 s."""
    import signal

    def timeout(signum, frame):
        raise TimeoutError("blocked: a special file was opened for reading")

    previous = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def _save_image(path: Path, h: int = 48, w: int = 64, seed: int = 0) -> Path:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)
    return path


def _special_files(folder: Path) -> list[Path]:
    """A FIFO, a socket and a link to a device, each with an image name."""
    import os
    import socket

    fifo = folder / "b.jpg"
    os.mkfifo(fifo)
    sock_path = folder / "s.png"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(sock_path))
    sock.close()  # the socket file stays
    device = folder / "d.png"
    device.symlink_to("/dev/zero")
    return [fifo, sock_path, device]


def test_special_files_in_a_label_folder_are_skipped(tmp_path: Path, no_hang, caplog) -> None:
    # A FIFO named b.jpg in a label folder hung the run forever (Ctrl-C ignored for > 30 s).
    from grounded_sam.labeling import prepare_labeling

    folder = tmp_path / "images"
    folder.mkdir()
    _save_image(folder / "a.jpg")
    specials = _special_files(folder)
    with caplog.at_level("WARNING"):
        images = prepare_labeling(folder, tmp_path / "out")
    assert images == [folder / "a.jpg"]
    for path in specials:
        assert any(str(path) in r.getMessage() for r in caplog.records), path
    assert "FIFO" in caplog.text and "socket" in caplog.text and "device" in caplog.text


def test_load_image_refuses_special_files_without_opening_them(tmp_path: Path, no_hang) -> None:
    from grounded_sam import load_image

    for path, kind in zip(_special_files(tmp_path), ["FIFO", "socket", "device"], strict=True):
        with pytest.raises(ValueError, match=f"is a {kind}.*not an image file"):
            load_image(path)
        with pytest.raises(ValueError, match="not an image file"):
            load_image(str(path))


def test_segment_and_everything_refuse_a_fifo(tiny_gs, tmp_path: Path, no_hang) -> None:
    import os

    fifo = tmp_path / "b.jpg"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="FIFO"):
        tiny_gs.segment(fifo, "dog")
    with pytest.raises(ValueError, match="FIFO"):
        tiny_gs.everything(fifo)


# --------------------------------------------------------------------------- float images
def test_float_tiffs_in_0_1_are_scaled_to_0_255(tmp_path: Path) -> None:
    # Float TIFFs in [0, 1] decoded almost black (values 0 and 1 only).
    import numpy as np
    from PIL import Image

    from grounded_sam import load_image

    ramp = np.linspace(0.0, 1.0, 64 * 48, dtype=np.float32).reshape(48, 64)
    Image.fromarray(ramp, mode="F").save(tmp_path / "unit.tif")
    got = load_image(tmp_path / "unit.tif")
    assert got.shape == (48, 64, 3) and got.dtype == np.uint8
    np.testing.assert_array_equal(got[..., 0], np.round(ramp * 255).astype(np.uint8))
    assert got.max() == 255 and got.min() == 0

    # Other float ranges are taken as 0-255 values and clipped; NaN is 0, inf the top.
    wide = np.array([[-20.0, 0.5, 3.0, 254.6, 300.0, np.nan, np.inf, -np.inf]], np.float32)
    Image.fromarray(wide, mode="F").save(tmp_path / "wide.tif")
    row = load_image(tmp_path / "wide.tif")[0, :, 0].tolist()
    assert row == [0, 1, 3, 255, 255, 0, 255, 0]


# --------------------------------------------------------------------------- labeling
def test_a_dataset_inside_the_images_folder_is_not_labeled_again(tmp_path: Path) -> None:
    # A second dataset written inside the input folder re-labeled the first dataset's images
    # (16 instead of 8).
    from tests.labeling.conftest import FakeEngine, run

    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(8):
        _save_image(folder / f"img{i}.png", seed=i)
    first, _ = run(FakeEngine(), folder, folder / "dataset1")
    assert first.total == first.labeled == 8
    second, _ = run(FakeEngine(), folder, folder / "dataset2")
    assert second.total == second.labeled == 8
    assert len(list((folder / "dataset2" / "images").iterdir())) == 8
    # ... and a dataset in a subfolder of a subfolder is skipped as well
    (folder / "runs").mkdir()
    (folder / "dataset1").rename(folder / "runs" / "dataset1")
    third, _ = run(FakeEngine(), folder, tmp_path / "dataset3")
    assert third.total == 8


def test_an_image_replaced_before_export_never_gets_a_wrong_size(tmp_path: Path) -> None:
    # An image replaced between labeling and export gave a COCO entry whose size disagreed
    # with its RLE.
    import json

    from pycocotools import mask as mask_utils

    from grounded_sam.labeling import export_dataset
    from tests.labeling.conftest import FakeEngine, run

    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(3):
        _save_image(folder / f"img{i}.png", seed=i)
    out = tmp_path / "ds"

    class ReplacingEngine(FakeEngine):
        """Replaces image ``victim`` (a different size) while image ``when`` is labeled."""

        def __init__(self, victim: int, when: int) -> None:
            super().__init__()
            self.victim, self.when = victim, when

        def query(self, index, prompt, **kwargs):
            dets = super().query(index, prompt, **kwargs)
            if self.indexed == self.when + 1:
                _save_image(folder / f"img{self.victim}.png", h=30, w=90, seed=9 + self.when)
            return dets

    def check_sizes() -> None:
        doc = json.loads((out / "annotations.json").read_text())
        sizes = {im["id"]: (im["height"], im["width"]) for im in doc["images"]}
        assert doc["annotations"]  # the check below cannot pass on an empty export
        for ann in doc["annotations"]:
            assert tuple(mask_utils.decode(ann["segmentation"]).shape) == sizes[ann["image_id"]]

    # Replaced while it is labeled: that image fails (not saved), the others are exported.
    report, failures = run(ReplacingEngine(victim=1, when=1), folder, out)
    assert report.labeled == 2 and [rel for rel, _ in failures] == ["img1.png"]
    assert "changed while it was labeled" in failures[0][1]
    check_sizes()
    report, _ = run(FakeEngine(), folder, out)  # the same command again labels it
    assert report.reused == 2 and report.labeled == 1
    check_sizes()

    # Replaced after it was labeled, before the export: refused, then labeled again.
    with pytest.raises(ValueError, match=r"img0.png changed since it was labeled.*90x30"):
        run(ReplacingEngine(victim=0, when=2), folder, out, restart=True)
    report, _ = run(FakeEngine(), folder, out)
    assert report.reused == 2 and report.labeled == 1
    check_sizes()

    # A dataset image replaced before a re-export is refused (nothing is rewritten).
    before = (out / "annotations.json").read_bytes()
    _save_image(out / "images" / "img2.png", h=20, w=20, seed=5)
    with pytest.raises(ValueError, match=r"img2.png changed since it was labeled.*put the orig"):
        export_dataset(out, "coco")
    assert (out / "annotations.json").read_bytes() == before


@pytest.mark.parametrize(
    ("classes", "match"),
    [
        (",".join(f"c{i}" for i in range(200)), "More than 128 phrases in one class list"),
        ("cat, d\x07og", "control character U\\+0007"),
        ("cat, " + "x" * 400, "has 400 characters; the limit is 300"),
        (" , ", "The class list is empty"),
    ],
)
def test_bad_class_lists_say_what_is_wrong(tmp_path: Path, classes: str, match: str) -> None:
    # `label --classes` with 200 classes, a control character or a 400-character class said
    # "The class list is empty".
    from grounded_sam.labeling import label_images
    from tests.labeling.conftest import FakeEngine, config

    _save_image(tmp_path / "a.png")
    with pytest.raises(ValueError, match=match):
        label_images(FakeEngine(), tmp_path, [tmp_path / "a.png"], classes, tmp_path / "o",
                     config=config(), progress=False)  # fmt: skip
    assert not (tmp_path / "o").exists()  # refused before anything was written


# --------------------------------------------------------------------------- output names
def test_segment_outputs_of_colliding_names_are_all_distinct() -> None:
    # `segment a.jpg a.png a_1.jpg --out o` overwrote a.png's results.
    from grounded_sam.cli.common import unique_stems

    stems = unique_stems([Path("a.jpg"), Path("a.png"), Path("a_1.jpg")])
    assert stems == ["a", "a_2", "a_1"]  # a_1.jpg keeps its own name
    outputs = [f"{s}{tail}" for s in stems for tail in (".json", "_overlay.png", "_masks")]
    assert len(set(outputs)) == len(outputs)


def test_outputs_honour_the_umask(tmp_path: Path) -> None:
    # Output files were created 0600 whatever the umask (tempfile.mkstemp).
    import os
    import stat

    import numpy as np

    from grounded_sam.export.files import (
        atomic_copy,
        atomic_write_json,
        atomic_write_png,
        atomic_write_text,
    )

    previous = os.umask(0o022)
    try:
        written = [
            atomic_write_json(tmp_path / "a.json", {"x": 1}),
            atomic_write_text(tmp_path / "a.txt", "x"),
            atomic_write_png(tmp_path / "a.png", np.zeros((4, 4), np.uint8)),
        ]
        for path in written:
            assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
        os.umask(0o027)
        assert stat.S_IMODE(atomic_write_text(tmp_path / "b.txt", "x").stat().st_mode) == 0o640
        os.chmod(tmp_path / "a.png", 0o666)
        copied = atomic_copy(tmp_path / "a.png", tmp_path / "c.png")
        assert stat.S_IMODE(copied.stat().st_mode) == 0o640  # the source's mode, minus umask
    finally:
        os.umask(previous)


# --------------------------------------------------------------------------- CLIP weights
def _clip_copy(tiny_model_specs, folder: Path) -> tuple[Path, dict]:
    """A copy of the tiny CLIP folder; returns (folder, its config)."""
    import json
    import shutil

    source = Path(tiny_model_specs[1].removeprefix("local-dir:"))
    shutil.copytree(source, folder)
    return folder, json.loads((folder / "open_clip_config.json").read_text())


def _never_build(monkeypatch: pytest.MonkeyPatch) -> None:
    import open_clip

    def fail(*args, **kwargs):
        raise AssertionError("open_clip was asked to build the model")

    monkeypatch.setattr(open_clip, "create_model_and_transforms", fail)


@pytest.mark.parametrize(
    ("path", "value", "match"),
    [
        (("vision_cfg", "width"), 1_000_000, "vision_cfg.width must be a positive integer"),
        (("text_cfg", "vocab_size"), 10**9, "text_cfg.vocab_size must be a positive integer"),
        (("vision_cfg", "image_size"), 4096, "image tokens"),  # with patch_size 1, below
        (("text_cfg", "layers"), "12", "text_cfg.layers must be a positive integer"),
        (("vision_cfg", "layers"), 200, "billion parameters"),
    ],
)
def test_a_huge_clip_config_is_refused_before_anything_is_built(
    tiny_model_specs, tmp_path: Path, monkeypatch, path, value, match
) -> None:
    # A CLIP config with huge dimensions allocated 51.5 GB before any check.
    import json

    from grounded_sam.clip import load_clip
    from grounded_sam.errors import ModelLoadError

    folder, cfg = _clip_copy(tiny_model_specs, tmp_path / "clip")
    section = cfg["model_cfg"][path[0]]
    section[path[1]] = value
    if path[1] == "image_size":
        section["patch_size"] = 1  # 4096**2 tokens
    if value == 200:
        section["width"] = 8192  # 200 layers of width 8192: ~160 billion parameters
    (folder / "open_clip_config.json").write_text(json.dumps(cfg))
    _never_build(monkeypatch)
    with pytest.raises(ModelLoadError, match=match):
        load_clip(f"local-dir:{folder}", device="cpu")


def test_a_positional_embedding_of_another_length_is_refused(
    tiny_model_specs, tmp_path: Path, monkeypatch
) -> None:
    # A CLIP positional embedding of 78 rows was silently resized to the config's 77.
    from safetensors.torch import load_file, save_file

    from grounded_sam.clip import load_clip
    from grounded_sam.errors import ModelLoadError

    for key, rows, match in [
        ("positional_embedding", 78, "text positional embedding .* 78 rows .* implies 77"),
        ("visual.positional_embedding", 20, "image positional embedding .* 20 rows .* 17"),
    ]:
        folder, _ = _clip_copy(tiny_model_specs, tmp_path / key)
        weights = folder / "open_clip_model.safetensors"
        state = load_file(str(weights))
        old = state[key]
        state[key] = torch.cat([old, old[-1:].expand(rows - old.shape[0], -1)])
        save_file(state, str(weights))
        with monkeypatch.context() as mp:
            _never_build(mp)
            with pytest.raises(ModelLoadError, match=match):
                load_clip(f"local-dir:{folder}", device="cpu")


def test_unreadable_or_special_weights_say_so(
    tiny_model_specs, tmp_path: Path, monkeypatch, no_hang
) -> None:
    # Unreadable weights (permission denied) said "No such file". The tests may run as root
    # (who reads anything), so the denial is simulated at os.open, where the check looks.
    import os

    from grounded_sam.clip import load_clip
    from grounded_sam.errors import ModelLoadError

    folder, _ = _clip_copy(tiny_model_specs, tmp_path / "clip")
    weights = folder / "open_clip_model.safetensors"
    real_open = os.open

    def denying(path, flags, *args, **kwargs):
        if Path(path) == weights:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)

    with monkeypatch.context() as mp:
        mp.setattr(os, "open", denying)
        with pytest.raises(ModelLoadError, match="permission denied reading .*chmod a\\+r"):
            load_clip(f"local-dir:{folder}", device="cpu")
    weights.unlink()
    os.mkfifo(weights)  # a FIFO with the weights' name would block the load forever
    with pytest.raises(ModelLoadError, match="not a regular file"):
        load_clip(f"local-dir:{folder}", device="cpu")


def test_unreadable_cached_hub_files_say_so(tmp_path: Path, monkeypatch) -> None:
    import os

    from huggingface_hub import constants

    from grounded_sam import hub
    from grounded_sam.errors import ModelLoadError
    from tests.test_hub import put_in_cache

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    put_in_cache(tmp_path / "hub", "org/sam", "config.json")
    model = hub.HubModel("SAM model 'org/sam'", "org/sam", (("config.json",),), "Get SAM.")
    assert hub.cached(model)
    real_open = os.open

    def denying(path, flags, *args, **kwargs):
        if Path(path).name == "config.json":
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", denying)
    with pytest.raises(ModelLoadError, match="SAM model 'org/sam'.*permission denied reading"):
        hub.cached(model)


# --------------------------------------------------------------------------- point counts
@pytest.fixture
def no_sam_work(tiny_gs, monkeypatch):
    """Fail a test whose call reaches the SAM decoder, the grid or CLIP grounding: a refused
    point count must cost no model work (the 100k-point query took 7.3 GB before failing)."""

    def forbidden(*args, **kwargs):
        raise AssertionError("the call reached model work before refusing the points")

    monkeypatch.setattr(type(tiny_gs.predictor), "decode", forbidden)
    monkeypatch.setattr(type(tiny_gs.grounder), "ground", forbidden)
    return tiny_gs


@pytest.fixture(scope="module")
def small_index(tiny_gs):
    import numpy as np

    image = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    return image, tiny_gs.index(image)


@pytest.mark.parametrize("count", [100_000, 1_000_000])
def test_query_with_too_many_points_is_refused(
    small_index, no_sam_work, monkeypatch, count: int
) -> None:
    # query(points=...) with 100k points allocated 7.3 GB and then failed; 1M did not answer.
    import numpy as np

    from grounded_sam import limits

    image, index = small_index
    points = np.full((count, 2), 10.0)
    expected = f"points has {count} entries; the limit is {limits.MAX_POINTS_PER_CALL}"
    with pytest.raises(ValueError, match=expected):
        no_sam_work.query(index, "x", points=points)
    listed = points[:100_000].tolist()  # a plain list, as JSON would give
    with pytest.raises(ValueError, match="points has 100000 entries"):
        no_sam_work.query(index, "x", points=listed)
    # segment() refuses before the image is indexed (no SAM encoder pass)
    monkeypatch.setattr(type(no_sam_work.predictor), "encode", no_sam_work.predictor.decode)
    with pytest.raises(ValueError, match=expected):
        no_sam_work.segment(image, "x", points=points)


@pytest.mark.parametrize("on_index", [True, False])
def test_predict_with_too_many_points_is_refused(small_index, no_sam_work, on_index) -> None:
    import numpy as np

    from grounded_sam import limits

    image, index = small_index
    points = np.full((100_000, 2), 10.0)
    match = f"Got 100000 points; at most {limits.MAX_POINTS_PER_CALL} per call"
    with pytest.raises(ValueError, match=match):
        no_sam_work.predict(index if on_index else image, points=points)
