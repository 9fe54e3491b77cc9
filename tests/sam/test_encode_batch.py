"""``encode_batch``, written once for every family, equals ``encode`` one image at a time.

Three images of different sizes in one encoder call give, per image, the embedding, the
family's features and the decoder results of encoding it alone, within ``BATCH_TOL`` of
``test_predictor.py`` (the same float re-association bound: a batched matrix product sums in
another order). One image is one call of batch 1, so ``encode`` is bitwise
``encode_batch([image])[0]``.
"""

from __future__ import annotations

import pytest
import torch

from .images import random_image
from .test_predictor import BATCH_TOL

SIZES = ((120, 200), (90, 64), (150, 150))


@pytest.fixture(scope="module")
def by_family(predictor, hq, sam2):
    return {"sam": predictor, "sam_hq": hq, "sam2": sam2}


@pytest.fixture(scope="module")
def images():
    return [random_image(h, w, seed=i) for i, (h, w) in enumerate(SIZES)]


@pytest.mark.parametrize("name", ["sam", "sam_hq", "sam2"])
def test_encode_batch_equals_encode_one_by_one(by_family, images, name, monkeypatch):
    predictor = by_family[name]
    calls = []
    real = predictor._encode_pixels

    def counted(pixels):
        calls.append(pixels.shape[0])
        return real(pixels)

    monkeypatch.setattr(predictor, "_encode_pixels", counted)
    batched = predictor.encode_batch(images)
    singles = [predictor.encode(img) for img in images]
    assert calls == [3, 1, 1, 1]
    box = torch.tensor([[10.0, 10.0, 60.0, 80.0]])
    for got, want, (h, w) in zip(batched, singles, SIZES, strict=True):
        assert got.original_size == want.original_size == (h, w)
        assert got.input_size == want.input_size
        # each image owns its memory (not a view of the batch), so it is kept or saved alone
        assert got.embeddings.untyped_storage().nbytes() == got.embeddings.nbytes
        torch.testing.assert_close(got.embeddings, want.embeddings, **BATCH_TOL)
        assert len(got.features) == len(want.features) == predictor.family.encoder_features
        for f, g in zip(got.features, want.features, strict=True):
            torch.testing.assert_close(f, g, **BATCH_TOL)
        a, b = predictor.decode(got, boxes=box), predictor.decode(want, boxes=box)
        torch.testing.assert_close(a.low_res_logits, b.low_res_logits, **BATCH_TOL)
        torch.testing.assert_close(a.iou_scores, b.iou_scores, **BATCH_TOL)
    # the images really differ, so the agreement above is not trivial
    assert (batched[0].embeddings - batched[2].embeddings).abs().max() > 1e-3


def test_encode_is_encode_batch_of_one(predictor, images):
    one = predictor.encode_batch(images[:1])[0]
    again = predictor.encode(images[0])
    assert torch.equal(one.embeddings, again.embeddings)


def test_encode_batch_needs_an_image(predictor):
    with pytest.raises(ValueError, match="at least one image"):
        predictor.encode_batch([])
