"""The back-end holds no per-image state: the decoder context is a value kept with the embedding.

* ``encode`` returns an embedding carrying this model's :class:`DecoderContext`; decoding an
  embedding without one (read from a file, another model's) builds one for that call only,
  with the same results, and ``prepare`` attaches one explicitly.
* After any decode the predictor holds no tensor but the model-wide positional encoding.
* Two threads decoding two different embeddings, interleaved, get exactly the results of
  one thread (same ops on the same inputs: compared bitwise).
* The shared layer-0 work is computed once per image: ``GroundedSAM.index`` computes it, new
  phrases never do, and a loaded index gets it once on ``ImageIndex.load(predictor=)``.
"""

from __future__ import annotations

import dataclasses
import threading

import pytest
import torch

from grounded_sam.sam.types import DecoderContext

from .images import random_image, shapes_image

BOXES = torch.tensor([[5.0, 5.0, 80.0, 70.0], [90.0, 20.0, 190.0, 110.0]])
POINTS = torch.tensor([[[50.0, 60.0]], [[150.0, 30.0]]])
LABELS = torch.ones(2, 1, dtype=torch.long)


def _prompts(side: int) -> list[dict]:
    mask = torch.randn(2, 1, side, side, generator=torch.Generator().manual_seed(0)) * 4
    return [
        {"points": POINTS, "labels": LABELS},
        {"boxes": BOXES},
        {"boxes": BOXES, "mask_input": mask, "multimask_output": False},
    ]


def _decode_all(predictor, embedding) -> list[torch.Tensor]:
    out = []
    for kw in _prompts(predictor.transform.low_res_size):
        d = predictor.decode(embedding, **kw)
        out += [d.low_res_logits, d.iou_scores]
    return out


@pytest.fixture(scope="module")
def families_predictors(predictor, hq, sam2):
    return {"sam": predictor, "sam_hq": hq, "sam2": sam2}


@pytest.mark.parametrize("name", ["sam", "sam_hq", "sam2"])
def test_encode_keeps_the_context_with_the_embedding(families_predictors, name):
    predictor = families_predictors[name]
    embedding = predictor.encode(random_image(120, 200))
    context = embedding.context
    assert isinstance(context, DecoderContext) and context.shared is not None
    assert context.source is predictor._fast.decoder
    assert len(context.extras) == {"sam": 0, "sam_hq": 1, "sam2": 2}[name]
    assert embedding.nbytes > embedding.embeddings.numel() * 4  # the context is counted
    with pytest.raises(dataclasses.FrozenInstanceError):
        embedding.context = None
    # without the context: built for each call, same results (same ops on the same inputs)
    bare = dataclasses.replace(embedding, context=None)
    for got, want in zip(_decode_all(predictor, bare), _decode_all(predictor, embedding),
                         strict=True):  # fmt: skip
        assert torch.equal(got, want)
    assert bare.context is None  # decode attached nothing
    prepared = predictor.prepare(bare)
    assert prepared is not bare and prepared.context is not None
    assert prepared.embeddings is bare.embeddings
    assert predictor.prepare(prepared) is prepared  # already prepared by this model


def test_predictor_holds_no_per_image_state(predictor):
    before = {k: v for k, v in vars(predictor).items() if torch.is_tensor(v)}
    for seed in range(2):
        _decode_all(predictor, predictor.encode(random_image(90, 140, seed=seed)))
    tensors = {k: v for k, v in vars(predictor).items() if torch.is_tensor(v)}
    assert set(tensors) == {"_image_pe"} and tensors["_image_pe"] is before["_image_pe"]
    assert not any(isinstance(v, DecoderContext) for v in vars(predictor).values())


def test_another_models_context_is_not_used(predictor, sam_model_dir):
    from grounded_sam.sam.loading import load_sam_model
    from grounded_sam.sam.predictor import SamPredictor

    other = SamPredictor(load_sam_model(sam_model_dir, torch.device("cpu"), torch.float32))
    embedding = predictor.encode(random_image(100, 100))
    assert not other._fits(embedding.context)
    assert other.prepare(embedding).context.source is other._fast.decoder
    mine = _decode_all(other, other.prepare(embedding))
    for got, want in zip(_decode_all(other, embedding), mine, strict=True):
        assert torch.equal(got, want)


@pytest.mark.parametrize("name", ["sam", "sam2"])
def test_concurrent_decodes_on_two_embeddings_match_one_thread(families_predictors, name):
    predictor = families_predictors[name]
    embeddings = [predictor.encode(random_image(120, 200, seed=s)) for s in (3, 4)]
    expected = [_decode_all(predictor, e) for e in embeddings]
    assert not torch.equal(expected[0][0], expected[1][0])  # the images really differ
    rounds = 6
    barrier = threading.Barrier(2)
    results: dict[int, list] = {0: [], 1: []}
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for _ in range(rounds):
                barrier.wait()  # both threads decode at the same time, every round
                results[i].append(_decode_all(predictor, embeddings[i]))
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=work, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    for i in (0, 1):
        assert len(results[i]) == rounds
        for got in results[i]:
            assert all(torch.equal(a, b) for a, b in zip(got, expected[i], strict=True))


class _CountPrepare:
    """Counts the fast decoder's shared layer-0 work (``FastMaskDecoder.prepare``)."""

    def __init__(self, monkeypatch, fast) -> None:
        self.calls = 0
        real = fast.prepare

        def counted(*args, **kwargs):
            self.calls += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(fast, "prepare", counted)


def test_shared_work_once_per_image_not_per_query(tiny_gs, monkeypatch, tmp_path):
    from grounded_sam import ImageIndex

    count = _CountPrepare(monkeypatch, tiny_gs.predictor._fast)
    index = tiny_gs.index(shapes_image(160, 120))
    assert count.calls == 1  # once, at encode, for the grid and every later query
    for phrase in ("a square", "a circle", "a red thing"):
        tiny_gs.query(index, phrase)
    assert count.calls == 1
    path = index.save(tmp_path / "i.gsindex")
    loaded = ImageIndex.load(path, predictor=tiny_gs.predictor)
    assert count.calls == 2 and loaded.embedding.context is not None
    for phrase in ("a square", "a circle"):
        tiny_gs.query(loaded, phrase)
    assert count.calls == 2
    plain = ImageIndex.load(path)  # the file holds no context: same format as before
    assert plain.embedding.context is None
    assert torch.equal(plain.embedding.embeddings, loaded.embedding.embeddings)
