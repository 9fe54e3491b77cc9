"""The callable class each Ray actor runs: models loaded once, then batches of images.

Ray Data constructs :class:`ImageLabeler` once per actor (so the models are loaded on the
worker, never pickled from the driver) and calls it with batches of ``{"path", "bytes"}``.
The batch's images are decoded, then go through the many-images loop of ``segment_many``
and ``grounded-sam label`` (:func:`grounded_sam.batch.iter_results`: the SAM encoder batched
on CUDA through ``predictor.encode_batch``, for every SAM family), each indexed once and
queried with all classes by :func:`grounded_sam.labeling.run.label_image` (the same
per-image step as ``grounded-sam label``); the batch's rows, failed images included, are
written as one Parquet shard before the call returns. This module does not import Ray.
"""

from __future__ import annotations

import io
import logging
import os
import posixpath
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from grounded_sam.batch import iter_results
from grounded_sam.distributed.shards import row_from_records, write_shard
from grounded_sam.inputs import check_image_size, load_image
from grounded_sam.labeling.run import label_image, one_line

if TYPE_CHECKING:
    from grounded_sam.grounding.options import QueryOptions
    from grounded_sam.pipeline import GroundedSAM

__all__ = ["EngineLoader", "ImageLabeler", "decode_image"]

logger = logging.getLogger(__name__)


class EngineLoader:
    """A picklable recipe for the engine: ``GroundedSAM.from_pretrained(**kwargs)``.

    Args:
        **kwargs: Arguments of :meth:`grounded_sam.GroundedSAM.from_pretrained` (model
            specs, device, dtype, crop style, proposal settings, thresholds).
    """

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs

    def __call__(self) -> GroundedSAM:
        """Load the models (on the worker that calls it)."""
        from grounded_sam.pipeline import GroundedSAM

        return GroundedSAM.from_pretrained(**self.kwargs)


def decode_image(data: bytes, name: str) -> np.ndarray:
    """Decode an image file's bytes exactly as ``load_image`` decodes the file (same checks).

    Args:
        data: The file's bytes.
        name: Shown in error messages.

    Returns:
        (H, W, 3) uint8 RGB, EXIF orientation applied.

    Raises:
        ValueError: Not an image, or truncated / corrupt.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            check_image_size(img.width, img.height, name=name)
            img.load()
            return load_image(img)
    except Image.DecompressionBombError as exc:
        raise ValueError(
            f"{name} is too large to decode safely (a possible decompression bomb: {exc})."
        ) from exc
    except UnidentifiedImageError as exc:
        raise ValueError(
            f"{name} is not an image file that can be read (supported: JPEG, PNG, BMP, WebP, "
            "TIFF, GIF)."
        ) from exc
    except (OSError, SyntaxError) as exc:
        raise ValueError(
            f"{name} could not be decoded ({exc}); the file is probably truncated or corrupt."
        ) from exc


class ImageLabeler:
    """Labels batches of images on one Ray actor and writes each batch as a shard.

    Args:
        engine: Zero-argument callable that loads the engine on the worker (e.g.
            :class:`EngineLoader`).
        classes: Parsed class names.
        options: The query knobs of every image.
        root: Root of the job's listing; an image's ``rel`` is its path relative to it.
        shard_dir: Local or shared folder the shards are written to.
        run_id: Id of the driver run (part of every shard name).
    """

    def __init__(
        self,
        engine: Callable[[], GroundedSAM],
        classes: Sequence[str],
        options: QueryOptions,
        root: str,
        shard_dir: str,
        run_id: str,
    ) -> None:
        self.classes = list(classes)
        self.options = options
        self.root = root
        self.shard_dir = shard_dir
        self.run_id = run_id
        self.gs = engine()
        logger.info("Worker %d ready (%s)", os.getpid(), self.gs.device)

    def __call__(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Label a batch of ``{"path": (B,) str, "bytes": (B,) bytes}``.

        Returns:
            ``{"rel": (B,) str, "error": (B,) str}`` (error "" for a labeled image), for
            the driver's progress; the results themselves are in the shard just written.
        """
        by_position: dict[int, dict[str, Any]] = {}
        decoded: list[tuple[int, str, str, int, np.ndarray]] = []
        for i, (path, data) in enumerate(zip(batch["path"], batch["bytes"], strict=True)):
            path = str(path)
            rel = posixpath.relpath(path, self.root) if self.root else path
            try:
                decoded.append((i, rel, path, len(data), decode_image(data, rel)))
            except Exception as exc:  # one image must not take the batch down
                by_position[i] = self._failed(rel, path, len(data), exc, "decode")

        def work(image: np.ndarray, embedding: Any) -> list[dict[str, Any]]:
            return label_image(self.gs, image, self.classes, self.options, embedding=embedding)

        items = iter_results(self.gs, [d[-1] for d in decoded], work, show_progress=False)
        for (i, rel, path, size, image), item in zip(decoded, items, strict=True):
            if item.ok:
                by_position[i] = row_from_records(rel, path, size, image.shape[:2], item.result)
            else:
                by_position[i] = self._failed(rel, path, size, item.result, "label")
        rows = [by_position[i] for i in range(len(by_position))]
        write_shard(self.shard_dir, self.run_id, rows)
        return {
            "rel": np.array([r["rel"] for r in rows], dtype=object),
            "error": np.array([r["error"] or "" for r in rows], dtype=object),
        }

    @staticmethod
    def _failed(rel: str, path: str, size: int, exc: BaseException, stage: str) -> dict[str, Any]:
        """The row of an image that failed at ``stage`` ("decode" or "label")."""
        trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        logger.debug("Failed on %s:\n%s", rel, trace)
        return row_from_records(rel, path, size, None, error=one_line(exc), stage=stage)
