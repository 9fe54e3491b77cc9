"""Helpers shared by the ONNX export tests: onnxruntime sessions and decoder inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

FEATURES = {
    "sam": ["image_embeddings"],
    "sam_hq": ["image_embeddings", "vit_features"],
    "sam2": ["image_embeddings", "high_res_feats_0", "high_res_feats_1"],
}
"""Encoder outputs = the decoder's first inputs, per family, in graph order."""


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
