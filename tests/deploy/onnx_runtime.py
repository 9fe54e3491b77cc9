"""Helpers shared by the ONNX export tests: onnxruntime sessions, decoder inputs, and the
comparison of a decoder graph's outputs with ``predictor.decode`` (tolerances in the test
modules' docstrings)."""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import pytest
import torch

FEATURES = {
    "sam": ["image_embeddings"],
    "sam_hq": ["image_embeddings", "vit_features"],
    "sam2": ["image_embeddings", "high_res_feats_0", "high_res_feats_1"],
}
"""Encoder outputs = the decoder's first inputs, per family, in graph order."""

ATOL, RTOL, IOU_ATOL, MASK_IOU_MIN = 1e-3, 1e-4, 1e-4, 0.999


def ort_session(path):
    """An onnxruntime CPU session on one intra-op thread for the graph at ``path``."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny graphs: one torch thread for the module (restored afterwards)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def decoder_inputs(family, predictor, embedding, points=None, labels=None, boxes=None, mask=None):
    """Decoder inputs as the manifest's prompt rules say, for prompts in original pixels.

    Clicks, then a box's corners (labels 2, 3), then the padding point (0, 0) label -1. SAM
    pads every prompt without a box (a mask-only prompt too); HQ-SAM pads prompts with clicks
    and no box; SAM 2 pads every prompt with points or a box. Otherwise a mask-only prompt has
    no points.
    """
    size = embedding.original_size
    batch = next(len(t) for t in (points, boxes, mask) if t is not None)
    coords, labs = [], []
    if points is not None:
        coords.append(predictor.transform.apply_coords(torch.as_tensor(points), size))
        labs.append(torch.as_tensor(labels, dtype=torch.float32))
    if boxes is not None:
        corners = predictor.transform.apply_boxes(torch.as_tensor(boxes), size).reshape(-1, 2, 2)
        coords.append(corners)
        labs.append(torch.tensor([2.0, 3.0]).expand(batch, 2))
    if family == "sam":
        pad = boxes is None
    else:
        pad = bool(coords) and (boxes is None or family == "sam2")
    if pad:
        coords.append(torch.zeros(batch, 1, 2))
        labs.append(-torch.ones(batch, 1))
    low = predictor.transform.low_res_size
    tensors = (embedding.embeddings, *embedding.features)
    return {
        **{name: t.float().numpy() for name, t in zip(FEATURES[family], tensors, strict=True)},
        "point_coords": torch.cat(coords, 1).float().numpy()
        if coords
        else np.zeros((batch, 0, 2), np.float32),
        "point_labels": torch.cat(labs, 1).float().numpy()
        if labs
        else np.zeros((batch, 0), np.float32),
        "mask_input": (torch.zeros(batch, 1, low, low) if mask is None else mask).numpy(),
        "has_mask_input": np.array([0.0 if mask is None else 1.0], dtype=np.float32),
    }


@contextmanager
def hq_token_only(predictor):
    """HQ-SAM's predictor returning the HQ mask alone, within the block."""
    predictor.hq_token_only = True
    try:
        yield
    finally:
        predictor.hq_token_only = False


def check_output(measured, what, predictor, embedding, ours, ours_iou, ref):
    """One output against one reference decode: logits, IoUs, upscaled masks.

    Records the max |logit diff| and 1 - worst mask IoU in ``measured`` under ``what``.
    """
    ref_logits = ref.low_res_logits.numpy()
    ref_masks = predictor.upscale(embedding, ref.low_res_logits) > 0
    assert 0 < ref_masks.float().mean() < 1, f"{what}: reference masks are empty or full"
    diff = np.abs(ours - ref_logits)
    measured[what] = max(measured.get(what, 0.0), float(diff.max()))
    assert (diff <= ATOL + RTOL * np.abs(ref_logits)).all(), f"{what}: {diff.max():.3g}"
    np.testing.assert_allclose(ours_iou, ref.iou_scores.numpy(), atol=IOU_ATOL)
    masks = predictor.upscale(embedding, torch.from_numpy(ours)) > 0
    inter = (masks & ref_masks).flatten(2).sum(-1).float()
    union = (masks | ref_masks).flatten(2).sum(-1).float()
    worst = float(torch.where(union > 0, inter / union.clamp(min=1), 1.0).min())
    measured[what + " 1-IoU"] = max(measured.get(what + " 1-IoU", 0.0), 1 - worst)
    assert worst >= MASK_IOU_MIN, f"{what}: mask IoU {worst:.5f}"


def compare_decoder(measured, family, predictor, embedding, session, what, **prompts):
    """The decoder graph's outputs vs ``predictor.decode`` for the same prompts, in both mask
    modes (HQ-SAM also with ``hq_token_only``). Returns the graph's outputs.

    ``prompts``: ``points``, ``labels``, ``boxes``, ``mask`` as for :func:`decoder_inputs`.
    """
    outputs = session.run(None, decoder_inputs(family, predictor, embedding, **prompts))
    logits, iou = outputs[0], outputs[1]
    kw = {
        "points": None if prompts.get("points") is None else torch.as_tensor(prompts["points"]),
        "labels": None if prompts.get("labels") is None else torch.as_tensor(prompts["labels"]),
        "boxes": None if prompts.get("boxes") is None else torch.as_tensor(prompts["boxes"]),
        "mask_input": prompts.get("mask"),
    }
    for multimask, chosen in ((False, slice(0, 1)), (True, slice(1, 4))):
        ref = predictor.decode(embedding, multimask_output=multimask, **kw)
        check_output(measured, what, predictor, embedding, logits[:, chosen], iou[:, chosen], ref)
        if family == "sam_hq":
            with hq_token_only(predictor):
                ref = predictor.decode(embedding, multimask_output=multimask, **kw)
            hq = np.repeat(outputs[2], chosen.stop - chosen.start, axis=1)
            what_hq = what + " hq_token_only"
            check_output(measured, what_hq, predictor, embedding, hq, iou[:, chosen], ref)
    return outputs
