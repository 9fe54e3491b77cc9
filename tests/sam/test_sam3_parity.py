"""Parity: our split SAM 3 path against transformers' own ``Sam3Model.forward`` +
``Sam3Processor.post_process_instance_segmentation``, on the same tiny random weights.

The reference runs the whole model (vision encoder included) for one phrase at a time, the way
transformers' docs show; ours encodes the image once (the index) and runs only the
text-conditioned part, several phrases batched. Both must give the same detections: the same
queries above the threshold, scores, boxes and masks. The threshold is chosen from the
reference's own scores so that it returns several detections (random weights score every query
near 0.25), and the reference's masks are checked to be non-trivial first.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from grounded_sam.grounding.options import QueryOptions
from tests.sam.sam3_models import scene, tiny_sam3_folder

CPU = torch.device("cpu")
PHRASES = ["a dog", "yellow disc", "the dark square"]


@pytest.fixture(scope="module")
def reference():
    import transformers

    folder = tiny_sam3_folder()
    model = transformers.Sam3Model.from_pretrained(folder).eval()
    processor = transformers.Sam3Processor.from_pretrained(folder)
    return model, processor


@pytest.fixture(scope="module")
def engine():
    from grounded_sam import GroundedSAM

    return GroundedSAM.from_pretrained(sam=tiny_sam3_folder(), device="cpu", dtype="float32")


def _reference_run(reference, image, **inputs):
    model, processor = reference
    batch = processor(images=image, return_tensors="pt", **inputs)
    with torch.inference_mode():
        out = model(**batch)
    return out, processor


def _threshold(scores: torch.Tensor, keep: int) -> float:
    """Midway between the keep-th and (keep+1)-th best score (no ties at the threshold)."""
    top = torch.sort(scores.flatten(), descending=True).values
    return float((top[keep - 1] + top[keep]) / 2)


def _compare(engine, index, out, processor, phrases, opts_kwargs, keep=5):
    h, w = index.size
    scores = out.pred_logits.sigmoid() * out.presence_logits.sigmoid()
    t = _threshold(scores[0], keep)
    ref = processor.post_process_instance_segmentation(
        out, threshold=t, mask_threshold=0.5, target_sizes=[(h, w)]
    )[0]
    ref_q = torch.nonzero(scores[0] > t).flatten()
    # the reference produced something worth comparing
    assert len(ref["scores"]) == keep == len(ref_q)
    areas = ref["masks"].flatten(1).sum(1)
    assert int((areas > 0).sum()) >= 2 and float(areas.float().mean()) < h * w
    assert float(ref["scores"].std()) > 0

    opts = QueryOptions(threshold=t, **opts_kwargs)
    found = engine.grounder.ground(index, phrases, opts)
    order = torch.argsort(found.selection.region)
    assert found.selection.region[order].tolist() == ref_q.tolist()
    torch.testing.assert_close(found.selection.score[order], ref["scores"], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(found.boxes[order], ref["boxes"], atol=1e-3, rtol=1e-4)
    ours = engine.predictor.upscale(found.low_res[order], (h, w))
    differ = (ours != ref["masks"].bool()).flatten(1).float().mean(1)
    assert float(differ.max()) < 2e-3, differ  # sigmoid at exactly 0.5 may flip a pixel
    return found


def test_each_phrase_matches_the_reference(engine, reference):
    image = scene()
    index = engine.index(image)
    for phrase in PHRASES:
        out, processor = _reference_run(reference, image, text=phrase)
        found = _compare(engine, index, out, processor, [phrase], {})
        assert set(found.selection.phrase.tolist()) == {0}


def test_exemplar_boxes_match_the_reference(engine, reference):
    image = scene()
    index = engine.index(image)
    box = [20.0, 10.0, 70.0, 55.0]
    out, processor = _reference_run(reference, image, input_boxes=[[box]], input_boxes_labels=[[1]])
    found = _compare(engine, index, out, processor, [], {"exemplars": [box]})
    assert found.labels == ("exemplar",)


def test_batched_phrases_equal_one_at_a_time(engine):
    index = engine.index(scene(seed=2))
    backend = engine.predictor
    together = backend.detect(index.embedding, backend.text_prompts(PHRASES))
    for i, phrase in enumerate(PHRASES):
        alone = backend.detect(index.embedding, backend.text_prompts([phrase]))
        torch.testing.assert_close(together.scores[i], alone.scores[0], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(together.boxes[i], alone.boxes[0], atol=1e-5, rtol=1e-4)
        q = torch.arange(4)
        torch.testing.assert_close(
            backend.mask_logits(index.embedding, together, i, q),
            backend.mask_logits(index.embedding, alone, 0, q),
            atol=1e-4,
            rtol=1e-4,
        )


def test_query_returns_the_reference_detections_as_detections(engine, reference):
    image = scene(seed=3)
    index = engine.index(image)
    out, processor = _reference_run(reference, image, text="a dog")
    scores = (out.pred_logits.sigmoid() * out.presence_logits.sigmoid())[0]
    t = _threshold(scores, 4)
    ref = processor.post_process_instance_segmentation(out, threshold=t, target_sizes=[index.size])[
        0
    ]
    dets = engine.query(index, "a dog", threshold=t, keep_parts=True, top_k=None)
    # no de-duplication asked for beyond exact duplicates: every non-empty reference mask
    kept = ref["masks"].flatten(1).any(1)
    assert len(dets) <= int(kept.sum()) and len(dets) >= 1
    for mask, score in zip(dets.mask, dets.confidence, strict=True):
        i = int(torch.argmin((ref["scores"] - float(score)).abs()))
        assert abs(float(ref["scores"][i]) - float(score)) < 1e-5
        assert np.mean(mask != ref["masks"][i].numpy().astype(bool)) < 2e-3
