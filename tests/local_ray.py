"""A real local Ray for tests: 2 CPUs, no dashboard, a small object store."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tests.conftest import REPO


@contextmanager
def local_ray(ray: Any) -> Iterator[str]:
    """Start Ray in this process; yields its GCS address and shuts it down afterwards.

    Workers import ``grounded_sam`` and the test helpers from this checkout (PYTHONPATH).
    """
    paths = [str(REPO), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ctx = ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        object_store_memory=200 * 1024 * 1024,
        logging_level="WARNING",
    )
    try:
        yield ctx.address_info["gcs_address"]
    finally:
        ray.shutdown()
