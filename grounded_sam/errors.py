"""Exceptions raised by grounded_sam with messages meant for the user."""

from __future__ import annotations

__all__ = ["ModelLoadError"]


class ModelLoadError(OSError):
    """A model could not be loaded: the message names the model and says what to do."""
