"""The ONNX test modules' report of what they measured."""

from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="module", autouse=True)
def report_measured(request: pytest.FixtureRequest):
    """Print a module's ``MEASURED`` maxima after its tests (run with -s).

    Not a test: every value is asserted against its tolerance by the test that measures it.
    """
    yield
    measured = getattr(request.module, "MEASURED", None)
    if measured:
        print("\nONNX vs PyTorch, max |diff| / 1 - mask IoU:", json.dumps(measured, indent=1))
