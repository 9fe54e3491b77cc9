"""Many images per call: segment_many / index_many over lists and folders."""

from __future__ import annotations

import numpy as np
import pytest
import supervision as sv
import torch
from PIL import Image

from grounded_sam import ImageIndex
from grounded_sam.batch import _encode_batch, list_sources


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    out = []
    for h, w in ((90, 120), (100, 80), (64, 64)):
        img = np.full((h, w, 3), 110, dtype=np.uint8)
        img[10 : h // 2, 10 : w // 2] = (200, 40, 40)
        out.append(np.clip(img + rng.integers(0, 20, img.shape), 0, 255).astype(np.uint8))
    return out


@pytest.fixture
def folder(tmp_path, images):
    root = tmp_path / "imgs"
    (root / "sub").mkdir(parents=True)
    Image.fromarray(images[0]).save(root / "a.png")
    Image.fromarray(images[1]).save(root / "sub" / "b.JPG")
    (root / "c.png").write_bytes(b"not a png")
    (root / "notes.txt").write_text("skip me")
    return root


def test_segment_many_folder_yields_results_and_errors_in_order(tiny_gs, folder):
    out = list(tiny_gs.segment_many(folder, "red box", threshold=0.0, show_progress=False))
    assert [p.relative_to(folder).as_posix() for p, _ in out] == ["a.png", "c.png", "sub/b.JPG"]
    (_, a), (_, c), (_, b) = out
    assert isinstance(a, sv.Detections) and isinstance(b, sv.Detections)
    assert isinstance(c, ValueError)  # the broken file is reported; the next image still ran
    assert a.mask.shape[1:] == (90, 120) and b.mask.shape[1:] == (100, 80)


def test_segment_many_matches_segment_and_batches_the_encoder(tiny_gs, images, monkeypatch):
    calls = []
    real = tiny_gs.predictor._encode_pixels

    def count(pixels):
        calls.append(pixels.shape[0])
        return real(pixels)

    monkeypatch.setattr(tiny_gs.predictor, "_encode_pixels", count)
    many = list(tiny_gs.segment_many(images, "red box", threshold=0.0, batch_size=2,
                                     show_progress=False))  # fmt: skip
    assert calls == [2, 1]  # two images in one encoder call, then the last one
    for (src, dets), img in zip(many, images, strict=True):
        assert src is img
        one = tiny_gs.segment(img, "red box", threshold=0.0)
        assert len(dets) == len(one) > 0
        np.testing.assert_allclose(dets.confidence, one.confidence, atol=1e-4)
        agree = (dets.mask == one.mask).mean()
        assert agree > 0.99


def test_batched_embeddings_match_single(tiny_gs, images):
    batched = _encode_batch(tiny_gs, images[:2])
    for emb, img in zip(batched, images[:2], strict=True):
        single = tiny_gs.predictor.encode(img)
        assert emb.original_size == single.original_size
        torch.testing.assert_close(emb.embeddings, single.embeddings, atol=1e-4, rtol=1e-4)


def test_index_many_and_bad_inputs(tiny_gs, images):
    out = list(tiny_gs.index_many([images[0], "missing.png"], show_progress=False))
    assert isinstance(out[0][1], ImageIndex) and isinstance(out[1][1], FileNotFoundError)
    with pytest.raises(ValueError, match="prompt is empty"):
        list(tiny_gs.segment_many(images, " "))
    with pytest.raises(ValueError, match="batch_size"):
        list(tiny_gs.segment_many(images, "x", batch_size=0))
    with pytest.raises(FileNotFoundError, match="No such image or folder"):
        list_sources("no/such/folder")
    with pytest.raises(TypeError, match="segment_many"):
        tiny_gs.segment([images[0], images[1]], "red box")



def test_a_folder_is_listed_as_label_lists_it(tmp_path):
    """segment_many / index_many and ``grounded-sam label`` take the same files of a folder."""
    from grounded_sam.labeling import find_images

    names = ["a.jpg", "b.TIF", "c.tiff", "d.txt", ".e.png", "sub/f.webp", ".hid/g.png"]
    for name in [*names, "sub-x/h.png"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    listed = [p.relative_to(tmp_path).as_posix() for p in list_sources(tmp_path)]
    assert listed == ["a.jpg", "b.TIF", "c.tiff", "sub-x/h.png", "sub/f.webp"]
    assert list_sources(tmp_path) == find_images(tmp_path)

@pytest.mark.gpu
def test_cuda_batched_encoder_matches_single(tiny_model_specs, images):
    from grounded_sam import GroundedSAM

    sam, clip = tiny_model_specs
    gs = GroundedSAM.from_pretrained(sam=sam, clip=clip, device="cuda", dtype="float32")
    batched = _encode_batch(gs, images)
    for emb, img in zip(batched, images, strict=True):
        single = gs.predictor.encode(img)
        torch.testing.assert_close(emb.embeddings, single.embeddings, atol=1e-3, rtol=1e-3)
    out = list(gs.segment_many(images, "red box", threshold=0.0, show_progress=False))
    assert all(isinstance(d, sv.Detections) for _, d in out)


def test_encoder_batch_is_halved_on_out_of_memory(tiny_gs, images, monkeypatch):
    calls = []
    real = tiny_gs.predictor._encode_pixels

    def small_gpu(pixels):
        calls.append(pixels.shape[0])
        if pixels.shape[0] > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(pixels)

    monkeypatch.setattr(tiny_gs.predictor, "_encode_pixels", small_gpu)
    out = list(tiny_gs.index_many(images, batch_size=3, show_progress=False))
    assert calls == [3, 1, 2, 1, 1]  # 3 -> 1 + 2 -> 1 + 1 + 1
    assert all(isinstance(r, ImageIndex) for _, r in out)


@pytest.fixture(scope="module", params=["sam_hq", "sam2"])
def family_gs(request, tiny_model_specs, tmp_path_factory):
    """An engine on a tiny HQ-SAM / SAM 2.1 model (the registry's tiny builder)."""
    from grounded_sam import EverythingSettings, GroundedSAM
    from grounded_sam.sam import families

    folder = families.get(request.param).save_tiny(tmp_path_factory.mktemp(request.param))
    return GroundedSAM.from_pretrained(
        sam=str(folder),
        clip=tiny_model_specs[1],
        device="cpu",
        proposal_settings=EverythingSettings(
            points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0
        ),
        threshold=0.0,
    )


def test_every_sam_family_is_encoded_in_batches(family_gs, images, monkeypatch):
    """HQ-SAM and SAM 2 go through predictor.encode_batch as SAM does (no family excluded)."""
    predictor = family_gs.predictor
    calls = []
    real = predictor._encode_pixels
    monkeypatch.setattr(predictor, "_encode_pixels",
                        lambda p: calls.append(p.shape[0]) or real(p))  # fmt: skip
    out = list(family_gs.index_many(images, batch_size=2, show_progress=False))
    assert calls == [2, 1] and all(isinstance(r, ImageIndex) for _, r in out)
    for (_, index), img in zip(out, images, strict=True):
        single = predictor.encode(img)
        assert len(index.embedding.features) == len(single.features) > 0
        torch.testing.assert_close(index.embedding.embeddings, single.embeddings,
                                   atol=1e-4, rtol=1e-4)  # fmt: skip


def test_auto_batch_size_is_the_same_for_every_family(family_gs, monkeypatch):
    """On CUDA the batch comes from free memory whatever the family; on CPU it is 1."""
    from types import SimpleNamespace

    from grounded_sam.batch import _BYTES_PER_IMAGE, _auto_batch_size

    assert _auto_batch_size(family_gs) == 1  # CPU: one at a time, as segment() encodes
    cuda = SimpleNamespace(device=torch.device("cuda"), predictor=family_gs.predictor)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (3 * _BYTES_PER_IMAGE, 0))
    assert _auto_batch_size(cuda) == 3
