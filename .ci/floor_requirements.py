"""Print what the packages installed in a side folder need and this environment lacks.

Used by ``.ci/run`` for the transformers floor: ``pip install --no-deps --target DIR
transformers==FLOOR`` puts the oldest supported transformers in ``DIR`` without touching the
virtual environment. This script reads the requirements (``METADATA``) of every distribution
in ``DIR`` and prints, one a line, each one that neither ``DIR`` nor the environment satisfies
(for example the older ``huggingface-hub`` and ``tokenizers`` ranges of an older
transformers), so that only those are added to ``DIR``; ``.ci/run`` repeats until it prints
nothing. Everything else (numpy, torch, safetensors...) stays the environment's.

Usage: ``python .ci/floor_requirements.py DIR``.
"""

from __future__ import annotations

import sys
from importlib import metadata

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name


def _versions(dists: list[metadata.Distribution]) -> dict[str, str]:
    return {canonicalize_name(d.metadata["Name"]): d.version for d in dists}


def missing_requirements(folder: str) -> list[str]:
    """Unconditional requirements of the distributions in ``folder`` that nothing satisfies.

    Args:
        folder: A ``pip install --target`` folder (it shadows the environment on PYTHONPATH).

    Returns:
        Requirement strings (without markers) to install into ``folder``; empty when every
        requirement is met by ``folder`` or, failing that, by this environment.

    Raises:
        ValueError: If ``folder`` holds no distribution.
    """
    here = list(metadata.distributions(path=[folder]))
    if not here:
        raise ValueError(f"{folder} holds no distribution; install one there with pip --target")
    versions = _versions(list(metadata.distributions())) | _versions(here)
    needed = set()
    for dist in here:
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue  # an extra's requirement, or another platform's
            version = versions.get(canonicalize_name(req.name))
            if version is None or not req.specifier.contains(version, prereleases=True):
                needed.add(f"{req.name}{req.specifier}")
    return sorted(needed)


if __name__ == "__main__":
    for requirement in missing_requirements(sys.argv[1]):
        print(requirement)
