"""Many images per call: one loop shared by ``segment_many``, ``index_many``, labeling and the CLI.

Images are decoded on a background thread while the models work on the previous ones. On
CUDA the SAM image encoder runs on ``batch_size`` images at once (chosen from free GPU memory
unless given, halved on an out-of-memory error); on CPU images are encoded one at a time
(sequential: batching a CPU encoder is not expected to help). A failing image yields its
error and the loop goes on.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

import numpy as np
import torch
from tqdm.auto import tqdm

from grounded_sam.grounding.options import QueryOptions
from grounded_sam.inputs import IMAGE_EXTENSIONS, ImageInput, find_images, load_image, parse_prompt

if TYPE_CHECKING:
    import supervision as sv

    from grounded_sam.grounding.index import ImageIndex
    from grounded_sam.sam.predictor import SamPredictor
    from grounded_sam.utils.progress import StageProgress

__all__ = [
    "BatchItem",
    "Engine",
    "IMAGE_EXTENSIONS",
    "ImageSources",
    "index_many",
    "iter_results",
    "list_sources",
    "segment_items",
    "segment_many",
]

logger = logging.getLogger(__name__)

ImageSources: TypeAlias = "str | os.PathLike | Iterable[ImageInput]"
"""A folder, or a list of paths / PIL images / (H, W, 3) uint8 arrays."""

#: GPU memory budgeted per image in an encoder batch when ``batch_size`` is not given
#: (ViT-H activations at 1024² in float16 stay well below this).
_BYTES_PER_IMAGE = 3 * 2**30
_MAX_AUTO_BATCH = 8


class Engine(Protocol):
    """What the loop needs from the engine.

    ``GroundedSAM`` is one; it is typed here without importing it, so that
    :mod:`grounded_sam.pipeline` may import this module without a cycle.
    """

    predictor: SamPredictor
    options: QueryOptions

    @property
    def device(self) -> torch.device:
        """Device the SAM model runs on."""
        ...

    def index(self, image: ImageInput, **kwargs: Any) -> ImageIndex:
        """The image's index (``embedding=``, ``show_progress=``, ``proposal_settings=``)."""
        ...

    def query(
        self,
        index: ImageIndex,
        prompt: str | Sequence[str] | None = None,
        options: QueryOptions | None = None,
        **knobs: Any,
    ) -> sv.Detections:
        """Detections for a prompt from an index."""
        ...


@dataclass
class BatchItem:
    """One image's outcome.

    Attributes:
        source: The input as given (path, PIL image or array).
        image: (H, W, 3) uint8 RGB, or None when it could not be read.
        result: Detections, an ImageIndex, or the exception that stopped this image.
    """

    source: object
    image: np.ndarray | None
    result: Any

    @property
    def ok(self) -> bool:
        """Whether the image was processed."""
        return not isinstance(self.result, Exception)


def list_sources(images: ImageSources) -> list[object]:
    """The inputs as a list: a folder's image files, or the items given.

    A folder is scanned as ``grounded-sam label`` scans it
    (:func:`~grounded_sam.inputs.find_images`: recursive, :data:`IMAGE_EXTENSIONS` in any
    case, hidden files and folders skipped, sorted by relative path).

    Raises:
        FileNotFoundError: A folder or path that does not exist (a single path only; paths
            inside a list fail one by one).
        TypeError: Not a folder, path or iterable of images.
    """
    if isinstance(images, (str, os.PathLike)):
        path = Path(images)
        if path.is_dir():
            return list(find_images(path))
        if path.is_file():
            return [path]
        raise FileNotFoundError(f"No such image or folder: {path}")
    if isinstance(images, np.ndarray) and images.ndim == 3:
        return [images]
    if isinstance(images, Iterable):
        return list(images)
    raise TypeError(
        f"Give a folder, or a list of image paths, PIL images or arrays; got "
        f"{type(images).__name__}."
    )


def _decoded(sources: Sequence[object], depth: int) -> Iterator[tuple[object, Any]]:
    """(source, array | exception) in order, decoded on a background thread."""
    q: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()
    done = object()

    def work() -> None:
        for src in sources:
            try:
                item = load_image(src)
            except Exception as exc:  # noqa: BLE001 - handed to the consumer, per image
                item = exc
            while not stop.is_set():
                try:
                    q.put((src, item), timeout=0.1)
                    break
                except queue.Full:
                    continue
            if stop.is_set():
                return
        q.put(done)

    thread = threading.Thread(target=work, name="grounded-sam-decode", daemon=True)
    thread.start()
    try:
        while (got := q.get()) is not done:
            yield got
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(0.05)


def _can_batch(gs: Engine) -> bool:
    """Whether the encoder can run several images at once: plain SAM only.

    HQ-SAM and SAM 2 keep further encoder features per image; they are encoded one at a time.
    """
    from grounded_sam.sam.predictor import SamPredictor

    predictor = getattr(gs, "predictor", None)
    return isinstance(predictor, SamPredictor) and type(predictor).encode is SamPredictor.encode


def _auto_batch_size(gs: Engine) -> int:
    device = getattr(gs, "device", None)
    if not isinstance(device, torch.device) or device.type != "cuda" or not _can_batch(gs):
        return 1
    free, _ = torch.cuda.mem_get_info(device)
    return int(max(1, min(_MAX_AUTO_BATCH, free // _BYTES_PER_IMAGE)))


def _encode_batch(gs: Engine, arrays: list[np.ndarray]) -> list[Any]:
    """SAM image embeddings of several images in one encoder call (halving on GPU OOM)."""
    from grounded_sam.sam.types import ImageEmbedding

    predictor = gs.predictor
    try:
        with torch.inference_mode():
            pixels = torch.cat(
                [
                    predictor.transform.preprocess(a, predictor.device, predictor.dtype)
                    for a in arrays
                ]
            )
            emb = predictor._encode_pixels(pixels)
    except torch.cuda.OutOfMemoryError:
        if len(arrays) == 1:
            raise
        torch.cuda.empty_cache()
        half = len(arrays) // 2
        logger.info("Encoder batch of %d ran out of GPU memory; halving it", len(arrays))
        return _encode_batch(gs, arrays[:half]) + _encode_batch(gs, arrays[half:])
    out = []
    for i, a in enumerate(arrays):
        size = (int(a.shape[0]), int(a.shape[1]))
        out.append(
            ImageEmbedding(
                embeddings=emb[i : i + 1],
                original_size=size,
                input_size=predictor.transform.input_size(size),
            )
        )
    return out


def iter_results(
    gs: Engine,
    images: ImageSources,
    work: Callable[[np.ndarray, Any], Any],
    *,
    batch_size: int | None = None,
    show_progress: bool = True,
    desc: str = "Images",
) -> Iterator[BatchItem]:
    """The one loop over many images.

    Args:
        gs: The engine.
        images: A folder, or a list of paths / PIL images / arrays.
        work: ``work(image, embedding_or_None)`` for one decoded image; its return value is
            the item's result. ``embedding`` is the image's SAM embedding when the encoder
            ran batched, else None (``work`` then encodes it itself).
        batch_size: Images per SAM encoder call. None: from free GPU memory on CUDA, 1 on
            CPU (sequential; batching does not speed up a CPU). HQ-SAM and SAM 2 are always
            encoded one image at a time.
        show_progress: A progress bar on stderr.
        desc: Its label.

    Yields:
        One :class:`BatchItem` per image, in input order.
    """
    sources = list_sources(images)
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}.")
    size = batch_size or _auto_batch_size(gs)
    bar = tqdm(total=len(sources), unit="img", desc=desc, disable=not show_progress)
    try:
        pending: list[tuple[object, Any]] = []
        stream = _decoded(sources, depth=2 * size)
        for got in stream:
            pending.append(got)
            if len(pending) == size:
                yield from _run_group(gs, pending, work, bar)
                pending = []
        if pending:
            yield from _run_group(gs, pending, work, bar)
    finally:
        bar.close()


def _run_group(
    gs: Engine, group: list[tuple[object, Any]], work: Callable, bar: tqdm
) -> Iterator[BatchItem]:
    readable = [(s, a) for s, a in group if isinstance(a, np.ndarray)]
    embeddings: dict[int, Any] = {}
    if len(readable) > 1 and _can_batch(gs):
        try:
            embs = _encode_batch(gs, [a for _, a in readable])
            embeddings = {id(a): e for (_, a), e in zip(readable, embs, strict=True)}
        except Exception as exc:  # noqa: BLE001 - fall back to one image at a time
            logger.warning("Batched encoding failed (%s); encoding images one by one", exc)
    for src, arr in group:
        if isinstance(arr, Exception):
            item = BatchItem(src, None, arr)
        else:
            try:
                item = BatchItem(src, arr, work(arr, embeddings.get(id(arr))))
            except Exception as exc:  # noqa: BLE001 - one image's failure is its result
                item = BatchItem(src, arr, exc)
        if not item.ok:
            logger.debug("Failed on %s: %s", _name(src), item.result)
        bar.update(1)
        yield item


def _name(source: object) -> str:
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    return type(source).__name__


def _index_fn(gs: Engine, **index_kwargs: Any) -> Callable[[np.ndarray, Any], Any]:
    def run(image: np.ndarray, embedding: Any) -> ImageIndex:
        if embedding is None:
            return gs.index(image, **index_kwargs)
        return gs.index(image, embedding=embedding, **index_kwargs)

    return run


def index_many(
    gs: Engine,
    images: ImageSources,
    *,
    batch_size: int | None = None,
    show_progress: bool = True,
    **index_kwargs: Any,
) -> Iterator[tuple[object, ImageIndex | Exception]]:
    """Index many images.

    Args:
        gs: The engine.
        images: A folder (searched recursively for :data:`IMAGE_EXTENSIONS`), or a list of
            paths, PIL images or (H, W, 3) uint8 arrays.
        batch_size: Images per SAM encoder call (see :func:`iter_results`).
        show_progress: Progress bar on stderr.
        **index_kwargs: Passed to ``gs.index`` (``proposal_settings``).

    Yields:
        ``(source, ImageIndex)``, or ``(source, exception)`` for an image that failed.
    """
    for item in iter_results(
        gs, images, _index_fn(gs, **index_kwargs), batch_size=batch_size,
        show_progress=show_progress, desc="Indexing",
    ):  # fmt: skip
        yield item.source, item.result


def segment_items(
    gs: Engine,
    images: ImageSources,
    prompt: str | Sequence[str] | None = None,
    *,
    batch_size: int | None = None,
    show_progress: bool = True,
    stages: Callable[[], StageProgress] | None = None,
    options: QueryOptions | None = None,
    **query_kwargs: Any,
) -> Iterator[BatchItem]:
    """Like :func:`segment_many`, yielding :class:`BatchItem` (with the decoded image).

    ``stages``, when given, is called once per image for a
    :class:`~grounded_sam.utils.progress.StageProgress` that shows (and times) that image's
    indexing stages: SAM encoder, proposals, CLIP regions. ``options`` and ``query_kwargs``
    are validated once, before any image (as ``GroundedSAM.query`` takes them).
    """
    # a bad prompt or knob fails once, before any image
    opts = (options or gs.options).replace(**query_kwargs)
    if prompt is not None or opts.exemplars is None:
        prompt = parse_prompt(prompt)
    opts.negatives_for(prompt or [])

    def run(image: np.ndarray, embedding: Any) -> sv.Detections:
        index = _index_fn(gs, show_progress=stages() if stages is not None else False)
        return gs.query(index(image, embedding), prompt, opts)

    yield from iter_results(
        gs, images, run, batch_size=batch_size, show_progress=show_progress, desc="Segmenting"
    )


def segment_many(
    gs: Engine,
    images: ImageSources,
    prompt: str | Sequence[str] | None = None,
    *,
    batch_size: int | None = None,
    show_progress: bool = True,
    options: QueryOptions | None = None,
    **query_kwargs: Any,
) -> Iterator[tuple[object, sv.Detections | Exception]]:
    """Segment what a prompt names in many images.

    Args:
        gs: The engine.
        images: A folder (searched recursively), or a list of paths, PIL images or arrays.
        prompt: Phrases, as for ``GroundedSAM.query``.
        batch_size: Images per SAM encoder call (see :func:`iter_results`).
        show_progress: Progress bar on stderr.
        options: The query's options (default: the engine's).
        **query_kwargs: Changes to ``options``, as for ``GroundedSAM.query`` (``threshold``,
            ``negative``, ...).

    Yields:
        ``(source, Detections)``, or ``(source, exception)`` for an image that failed (the
        others go on).

    Example:
        >>> for path, dets in gs.segment_many("photos/", "dog, cat"):  # doctest: +SKIP
        ...     if isinstance(dets, Exception):
        ...         print(path, "failed:", dets)
    """
    for item in segment_items(
        gs, images, prompt, batch_size=batch_size, show_progress=show_progress,
        options=options, **query_kwargs,
    ):  # fmt: skip
        yield item.source, item.result
