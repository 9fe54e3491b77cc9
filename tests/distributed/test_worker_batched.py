"""The Ray actor's batch runs the batched many-images loop: one ``encode_batch`` per group."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from grounded_sam.grounding.options import QueryOptions

pytest.importorskip("pyarrow", reason="pyarrow comes with ray[data]")

from grounded_sam import batch as batch_module  # noqa: E402
from grounded_sam.distributed import worker  # noqa: E402
from grounded_sam.distributed.shards import read_rows  # noqa: E402


def _png(h: int, w: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


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
