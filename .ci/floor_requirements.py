"""Print what the packages installed in a side folder need and this environment lacks.

Used by ``.ci/run`` for the transformers floor: ``pip install --no-deps --target DIR
transformers==FLOOR`` puts the oldest supported transformers in ``DIR`` without touching the
virtual environment. This script reads the requirements (``METADATA``) of every distribution
in ``DIR`` and prints, one a line, each one that neither ``DIR`` nor the environment satisfies
(for example the older ``huggingface-hub`` and ``tokenizers`` ranges of an older
transformers), so that only those are added to ``DIR``; ``.ci/run`` repeats until it prints
nothing. Everything else (numpy, torch, safetensors...) stays the environment's.

Optional integrations are the exception: transformers imports some packages whenever they are
installed (``kernels``, through ``transformers.integrations.hub_kernels``, on every import of
``transformers.activations``), so a newer copy in the environment breaks an older
transformers even though nothing requires it (transformers 5.1.0 with kernels 0.19: "Either a
revision or a version must be specified" on importing any SAM model). For the extras named in
``RUNTIME_EXTRAS``, a package the environment has at a version outside the floor's range is
printed with that range, so the folder gets a matching copy.

Usage: ``python .ci/floor_requirements.py DIR``.
"""

from __future__ import annotations

import sys
from importlib import metadata

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

#: Extras of the floor distribution whose packages it uses as soon as they are installed.
RUNTIME_EXTRAS = frozenset({"kernels"})


def _extra_of(req: Requirement) -> str | None:
    """The extra a requirement belongs to (``None`` if it is unconditional or not per extra)."""
    if req.marker is None:
        return None
    for extra in RUNTIME_EXTRAS:
        if req.marker.evaluate({"extra": extra}) and not req.marker.evaluate({"extra": ""}):
            return extra
    return None


def _versions(dists: list[metadata.Distribution]) -> dict[str, str]:
    return {canonicalize_name(d.metadata["Name"]): d.version for d in dists}


def missing_requirements(folder: str) -> list[str]:
    """Unconditional requirements of the distributions in ``folder`` that nothing satisfies.

    Args:
        folder: A ``pip install --target`` folder (it shadows the environment on PYTHONPATH).

    Returns:
        Requirement strings (without markers) to install into ``folder``; empty when every
        requirement is met by ``folder`` or, failing that, by this environment, and every
        installed package of a ``RUNTIME_EXTRAS`` extra is in the range the folder asks for.

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
            version = versions.get(canonicalize_name(req.name))
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                # An extra's requirement, or another platform's: only a runtime integration
                # that is installed (and at a version the floor does not accept) matters.
                if _extra_of(req) is None or version is None:
                    continue
            if version is None or not req.specifier.contains(version, prereleases=True):
                needed.add(f"{req.name}{req.specifier}")
    return sorted(needed)


if __name__ == "__main__":
    for requirement in missing_requirements(sys.argv[1]):
        print(requirement)
