"""One factory: a loaded SAM-family model (or a checkpoint spec) -> the matching predictor."""

from __future__ import annotations

import os

import torch

from grounded_sam.sam import families
from grounded_sam.sam.backend import SamBackend

__all__ = ["create_predictor", "load_predictor"]


def create_predictor(model, compile: bool | str = False) -> SamBackend:
    """The predictor of a model's family, picked by its config's ``model_type``.

    The family's registry record (:mod:`grounded_sam.sam.families`) names the predictor.

    Args:
        model: A loaded ``SamModel``, ``SamHQModel`` or ``Sam2Model`` (eval mode).
        compile: ``torch.compile`` the image encoder and the mask decoder (see
            :class:`~grounded_sam.sam.predictor.SamPredictor`).

    Returns:
        ``SamPredictor``, ``SamHQPredictor`` or ``Sam2Predictor`` driving it.

    Raises:
        ValueError: The model is of no supported SAM family (the message lists them).
    """
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    try:
        family = families.for_model_type(model_type)
    except ValueError:
        raise ValueError(
            f"No SAM predictor for a model of type {model_type!r} ({type(model).__name__}); "
            f"supported: {', '.join(map(repr, families.names()))} ({families.describe()})."
        ) from None
    return family.predictor_class()(model, compile=compile)


def load_predictor(
    spec: str | os.PathLike,
    device: torch.device,
    dtype: torch.dtype,
    compile: bool | str = False,
) -> SamBackend:
    """Load a checkpoint and wrap it in its family's predictor.

    The config is read first (see :func:`~grounded_sam.sam.loading.load_sam_model`).

    Args:
        spec: Hub id, alias or local folder.
        device: Where to run.
        dtype: Weight precision.
        compile: See :func:`create_predictor`.

    Returns:
        The predictor.
    """
    from grounded_sam.sam.loading import load_sam_model

    return create_predictor(load_sam_model(spec, device, dtype), compile=compile)
