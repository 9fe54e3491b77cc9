"""ImageLabeler without Ray: a batch goes through the many-images loop, row by row, and its
images are encoded through ``predictor.encode_batch`` in groups."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from grounded_sam.grounding.options import QueryOptions
from grounded_sam.labeling import label_image
from tests.distributed.conftest import CLASSES

pytest.importorskip("pyarrow", reason="pyarrow comes with ray[data]")

from grounded_sam import batch as batch_module  # noqa: E402
from grounded_sam.distributed import worker  # noqa: E402
from grounded_sam.distributed.shards import read_rows  # noqa: E402


def _png(h: int, w: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def test_a_batch_is_labeled_through_iter_results_with_per_image_errors(
    tiny_gs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    loop = worker.iter_results

    def spy(gs, images, work, **kwargs):
        calls.append(len(images))
        return loop(gs, images, work, **kwargs)

    monkeypatch.setattr(worker, "iter_results", spy)
    options = QueryOptions(threshold=0.0, top_k=3)
    labeler = worker.ImageLabeler(
        lambda: tiny_gs, CLASSES.split(", "), options, "/root", str(tmp_path), "run1"
    )
    data = [_png(64, 80, 0), b"not an image", _png(72, 72, 1)]
    paths = ["/root/a.png", "/root/sub/bad.jpg", "/root/b.png"]
    out = labeler({"path": np.array(paths, dtype=object), "bytes": np.array(data, dtype=object)})

    assert calls == [2]  # the two readable images, in one loop
    assert list(out["rel"]) == ["a.png", "sub/bad.jpg", "b.png"]  # input order kept
    assert out["error"][0] == "" == out["error"][2] and "sub/bad.jpg" in out["error"][1]
    rows = {r.rel: r for r in read_rows(tmp_path)}
    assert rows["sub/bad.jpg"].stage == "decode" and rows["sub/bad.jpg"].records() == []
    for rel, blob in (("a.png", data[0]), ("b.png", data[2])):
        image = np.array(Image.open(io.BytesIO(blob)).convert("RGB"))
        want = label_image(tiny_gs, image, CLASSES.split(", "), options)
        assert rows[rel].error is None and (rows[rel].height, rows[rel].width) == image.shape[:2]
        assert rows[rel].records() == want


def test_a_failing_image_is_a_label_error_row_and_the_batch_goes_on(
    tiny_gs, tmp_path: Path
) -> None:
    class Raising:
        def __init__(self, gs):
            self.gs = gs

        def __getattr__(self, name):
            return getattr(self.gs, name)

        def index(self, image, **kw):
            if image.shape[:2] == (72, 72):
                raise RuntimeError("simulated failure")
            return self.gs.index(image, **kw)

    labeler = worker.ImageLabeler(
        lambda: Raising(tiny_gs), ["date"], QueryOptions(), "", str(tmp_path), "run2"
    )
    batch = {
        "path": np.array(["x.png", "y.png"], dtype=object),
        "bytes": np.array([_png(72, 72, 2), _png(64, 64, 3)], dtype=object),
    }
    out = labeler(batch)
    assert list(out["error"]) == ["simulated failure", ""]
    rows = {r.rel: r for r in read_rows(tmp_path)}
    assert rows["x.png"].stage == "label" and rows["y.png"].error is None


def test_an_actor_batch_is_encoded_through_encode_batch(
    tiny_gs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As on a GPU (an automatic encoder batch of 2), three images take two encoder calls."""
    monkeypatch.setattr(batch_module, "_auto_batch_size", lambda gs: 2)
    predictor = tiny_gs.predictor
    sizes: list[int] = []
    real = predictor.encode_batch

    def spy(images):
        sizes.append(len(images))
        return real(images)

    monkeypatch.setattr(predictor, "encode_batch", spy)
    labeler = worker.ImageLabeler(
        lambda: tiny_gs, ["date"], QueryOptions(threshold=0.0), "", str(tmp_path), "run"
    )
    data = [_png(64, 80, 0), _png(72, 72, 1), _png(60, 50, 2)]
    names = ["a.png", "b.png", "c.png"]
    out = labeler({"path": np.array(names, dtype=object), "bytes": np.array(data, dtype=object)})
    assert sizes == [2, 1]  # the pair in one call, then the last image (through encode)
    assert list(out["error"]) == ["", "", ""]
    assert sorted(r.rel for r in read_rows(tmp_path)) == names
