"""onnxruntime helpers shared by the ONNX export tests (one thread, CPU provider)."""

from __future__ import annotations

import pytest
import torch


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
