"""Labeling videos: each video tracked with the text prompt, exported as COCO-video or MOT.

``grounded-sam label`` on a folder of videos (or one video file) goes here instead of the
image loop (:mod:`grounded_sam.labeling.run`). Every video is tracked by
:func:`grounded_sam.video.api.track`, the call ``grounded-sam track`` and ``gs.track`` make
(key frames grounded by the engine's index + query, SAM 2.1 propagating in between); the
classes are the phrases. Each video's result is streamed into its state file and renamed into
place when the video is done (:mod:`grounded_sam.labeling.video_state`), so an interrupted run
resumes with the next unfinished video, and a finished run exports again (another format)
without loading a model. Then the dataset is written:

* ``coco``: ``annotations.json`` in COCO-video (:mod:`~grounded_sam.labeling.formats.coco_video`);
* ``mot``: MOTChallenge sequence folders (:mod:`~grounded_sam.labeling.formats.mot`).

A folder holding both images and videos is refused (label them into separate datasets): a
dataset is either one of images (COCO / YOLO / VOC) or one of videos (COCO-video / MOT).
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from grounded_sam.export.files import flat_stems
from grounded_sam.grounding.options import QueryOptions
from grounded_sam.inputs import IMAGE_EXTENSIONS, check_int, find_images, parse_prompt
from grounded_sam.labeling.config import engine_config, engine_options
from grounded_sam.labeling.formats.coco_video import write_coco_video
from grounded_sam.labeling.formats.mot import write_mot
from grounded_sam.labeling.frames import extract_frames, prune_frames
from grounded_sam.labeling.lock import dataset_lock
from grounded_sam.labeling.run import LabelReport, one_line
from grounded_sam.labeling.scan import is_dataset_dir
from grounded_sam.labeling.state import (
    SCHEMA,
    begin_run,
    read_run_config,
    run_file,
    source_stamp,
)
from grounded_sam.labeling.video_state import (
    LabeledVideo,
    clear_partial,
    discard_video_result,
    exported_videos,
    load_video_result,
    record_exported,
    video_state_path,
)
from grounded_sam.video.reader import MAX_FRAMES, VIDEO_EXTENSIONS
from grounded_sam.video.types import TrackerSettings

if TYPE_CHECKING:
    from grounded_sam.video.api import Engine
    from grounded_sam.video.types import Propagator

__all__ = [
    "VIDEO_FORMATS",
    "VideoLabelReport",
    "check_video_format",
    "export_video_dataset",
    "export_videos",
    "find_videos",
    "label_video_folder",
    "label_videos",
    "prepare_video_labeling",
    "video_config",
]

logger = logging.getLogger(__name__)

VIDEO_FORMATS = ("coco", "mot")
"""Dataset formats of a video labeling run: COCO-video and MOTChallenge."""

_VIDEO_FAILURES = (ValueError, OSError, TypeError, RuntimeError, MemoryError)


@dataclass
class VideoLabelReport(LabelReport):
    """What a video labeling run did (counts are videos; ``instances`` counts tracks).

    Attributes:
        frames: Frames in the exported videos.
    """

    frames: int = 0


def check_video_format(fmt: str) -> None:
    """Raise a ValueError naming the video formats when ``fmt`` is not one of them."""
    if fmt not in VIDEO_FORMATS:
        raise ValueError(
            f"--format {fmt} is an image format; a folder of videos is labeled into "
            f"{' or '.join(VIDEO_FORMATS)} (COCO-video or MOTChallenge)."
        )


def find_videos(root: str | os.PathLike, exclude: Sequence[str | os.PathLike] = ()) -> list[Path]:
    """Video files under ``root`` (recursively, :data:`VIDEO_EXTENSIONS` in any case), sorted.

    Labeled datasets under ``root`` and hidden folders are skipped, as for images.
    """
    return find_images(root, exclude=exclude, skip_dir=is_dataset_dir, extensions=VIDEO_EXTENSIONS)


def prepare_video_labeling(
    source: str | os.PathLike, out_dir: str | os.PathLike
) -> tuple[Path, list[Path]] | None:
    """The videos of a labeling job, or None when it is a job of images.

    Args:
        source: A video file, or a folder (scanned recursively).
        out_dir: DATASET_DIR (checked as for images).

    Returns:
        ``(folder the videos' relative paths start from, videos)``; None when ``source`` is
        a folder without videos (an image job: :func:`~grounded_sam.labeling.scan.
        prepare_labeling`) or does not exist (the image job's check then reports it).

    Raises:
        ValueError: The folder holds both images and videos, or ``out_dir`` is not usable.
    """
    src, out = Path(source), Path(out_dir)
    if src.is_file() and src.suffix.lower() in VIDEO_EXTENSIONS:
        _check_out(src.parent, out)
        return src.parent, [src]
    if not src.is_dir():
        return None
    videos = find_videos(src, exclude=[out.resolve()])
    if not videos:
        return None
    images = find_images(src, exclude=[out.resolve()], skip_dir=lambda p: run_file(p).is_file())
    if images:
        raise ValueError(
            f"{src} holds both videos ({len(videos)}, e.g. {videos[0].name}) and images "
            f"({len(images)}, e.g. {images[0].name}): a dataset is of images (coco, yolo, voc) "
            "or of videos (coco, mot). Put them in separate folders and label each into its "
            "own --out."
        )
    _check_out(src, out)
    return src, videos


def _check_out(src: Path, out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ValueError(f"Output path {out} is a file: give a folder for the dataset.")
    src_r, out_r = src.resolve(), out.resolve()
    if out_r == src_r or out_r in src_r.parents:
        raise ValueError(
            f"The output folder {out} contains the videos folder {src}: choose a separate "
            "output folder for the dataset."
        )


def video_config(
    config: Mapping[str, Any],
    settings: TrackerSettings,
    propagator: str | os.PathLike | None,
    max_frames: int | None,
) -> dict[str, Any]:
    """A video run's config: the labeling config plus the tracking settings.

    Args:
        config: :func:`~grounded_sam.labeling.config.labeling_config` of the run.
        settings: The tracker's knobs.
        propagator: The SAM 2.1 checkpoint that propagates (None: the engine's SAM).
        max_frames: Frames tracked per video at most (None: all).

    Returns:
        A JSON-ready dict (``run.json``; saved videos are reused only when it matches).
    """
    return {
        **dict(config),
        "video": {
            "tracker": settings.as_dict(),
            "propagator": None if propagator is None else os.fspath(propagator),
            "max_frames": max_frames,
        },
    }


def label_videos(
    engine: Engine | Callable[[], Engine],
    root: str | os.PathLike,
    videos: Sequence[str | os.PathLike],
    classes: str | Sequence[str],
    out_dir: str | os.PathLike,
    fmt: str = "coco",
    *,
    settings: TrackerSettings | None = None,
    propagator: Propagator | str | os.PathLike | None = None,
    max_frames: int | None = None,
    options: QueryOptions | None = None,
    config: Mapping[str, Any] | None = None,
    restart: bool = False,
    progress: bool = True,
    on_failure: Callable[[str, str], None] | None = None,
    lock_wait: float = 0.0,
    frames: bool = False,
    **knobs: Any,
) -> VideoLabelReport:
    """Track videos (resumably, one state file per video) and export the dataset.

    Args:
        engine: The engine, or a function that loads it: called only if some video still
            needs tracking.
        root: Folder the videos' relative paths start from (they name the state files).
        videos: Video files under ``root`` (from :func:`prepare_video_labeling`).
        classes: Class names, comma-separated or a list (the tracker's phrases).
        out_dir: DATASET_DIR.
        fmt: ``"coco"`` (COCO-video) or ``"mot"``.
        settings: Tracker knobs (default :class:`TrackerSettings`).
        propagator: A SAM 2.1 checkpoint or a :class:`~grounded_sam.video.types.Propagator`
            (loaded once, reset between videos); None: the engine's SAM 2.1.
        max_frames: Track at most this many frames of each video.
        options: Query knobs of the key frames (None: the engine's defaults).
        config: The run's :func:`~grounded_sam.labeling.config.labeling_config`; required
            when ``engine`` is a loader. The tracking settings are added
            (:func:`video_config`).
        restart: Discard saved progress and track every video again.
        progress: Progress bars (videos; frames of the current video).
        on_failure: Called with ``(relative path, reason)`` when a video fails; the run goes
            on. Default: log a warning.
        lock_wait: Seconds to wait when another run holds ``out_dir``.
        frames: Also write every frame as ``SEQ/img1/000001.jpg``, ... (decoded again from
            the video; :mod:`~grounded_sam.labeling.frames`), the files the datasets name.
        **knobs: Changes to ``options`` (``threshold=``, ``top_k=``, ...).

    Returns:
        A :class:`VideoLabelReport`.

    Raises:
        ValueError: An image format, an empty class list, a bad knob, or ``out_dir`` holds a
            run with other settings (and ``restart`` is False).
        grounded_sam.labeling.lock.DatasetBusyError: Another run holds ``out_dir``.
        grounded_sam.ModelLoadError: The engine or the propagator cannot be loaded.
    """
    check_video_format(fmt)
    class_list = parse_prompt(classes, what="class list")
    settings = settings or TrackerSettings()
    if max_frames is not None:
        check_int("max_frames", max_frames, 1, MAX_FRAMES)
    gs = engine if hasattr(engine, "index") else None
    if options is None and gs is not None:
        options = engine_options(gs)
    checked = (options or QueryOptions()).replace(**knobs)
    checked.negatives_for(class_list)
    if config is None:
        if gs is None:
            raise TypeError("label_videos needs config= when engine is a loader function.")
        config = engine_config(gs, class_list, checked)
    prop_name = propagator if isinstance(propagator, (str, os.PathLike)) or propagator is None \
        else type(propagator).__name__  # fmt: skip
    config = video_config(config, settings, prop_name, max_frames)
    with dataset_lock(out_dir, wait=lock_wait):
        begin_run(out_dir, config, restart)
        clear_partial(out_dir)
        job = _VideoJob(
            Path(root), Path(out_dir), class_list, settings, max_frames, progress, on_failure,
            frames,
        )  # fmt: skip
        return job.run(engine, gs, propagator, videos, options, knobs, config, fmt)


@dataclass
class _VideoJob:
    root: Path
    out: Path
    classes: list[str]
    settings: TrackerSettings
    max_frames: int | None
    progress: bool
    on_failure: Callable[[str, str], None] | None
    frames: bool

    def run(
        self,
        engine: Any,
        gs: Any,
        propagator: Any,
        videos: Sequence[str | os.PathLike],
        options: QueryOptions | None,
        knobs: Mapping[str, Any],
        config: Mapping[str, Any],
        fmt: str,
    ) -> VideoLabelReport:
        report = VideoLabelReport(total=len(videos))
        done: dict[str, LabeledVideo] = {}
        todo: list[tuple[str, Path]] = []
        sources: dict[str, Path] = {}
        for path in map(Path, videos):
            rel = path.relative_to(self.root).as_posix()
            sources[rel] = path
            entry = load_video_result(self.out, rel, path) if path.exists() else None
            if entry is None:
                todo.append((rel, path))
            else:
                done[rel] = entry
        report.reused = len(done)
        if report.reused:
            logger.info("Resuming: %d of %d videos already labeled", report.reused, len(videos))

        def fail(rel: str, reason: str) -> None:
            report.failed.append((rel, reason))
            if self.on_failure is not None:
                self.on_failure(rel, reason)
            else:
                logger.warning("Skipped %s: %s", rel, reason)

        if todo:
            if gs is None:  # some video needs work: load the models now
                gs = engine()
                options = engine_options(gs) if options is None else options
            query = (options or QueryOptions()).replace(**knobs)
            prop = propagator
            if prop is None or isinstance(prop, (str, os.PathLike)):
                from grounded_sam.video.api import engine_propagator

                prop = engine_propagator(gs, prop)  # loaded once, reset per video
            bar = tqdm(total=len(videos), initial=report.reused, unit="video", desc="Labeling",
                       disable=not self.progress, dynamic_ncols=True)  # fmt: skip
            try:
                for rel, path in todo:
                    bar.set_postfix_str(rel[-40:], refresh=False)
                    entry = self._track(gs, prop, query, rel, path, fail)
                    if entry is not None:
                        done[rel] = entry
                        report.labeled += 1
                    bar.update(1)
            finally:
                bar.close()
        entries = [done[k] for k in sorted(done)]
        report.exported, report.instances = export_videos(
            self.out, entries, self.classes, fmt, config,
            frames={rel: sources[rel] for rel in done} if self.frames else None,
        )  # fmt: skip
        report.frames = sum(e.num_frames for e in entries)
        return report

    def _track(
        self,
        gs: Any,
        prop: Any,
        query: QueryOptions,
        rel: str,
        path: Path,
        fail: Callable[[str, str], None],
    ) -> LabeledVideo | None:
        """Track one video into its state file; None (reported) when it fails."""
        from grounded_sam.video.api import track
        from grounded_sam.video.writers import TrackWriter

        discard_video_result(self.out, rel)  # stale: a failure below must not leave it
        try:
            stamp = source_stamp(path)  # before it is read: a file replaced meanwhile is noticed
            run = track(gs, path, self.classes, settings=self.settings, propagator=prop,
                        max_frames=self.max_frames, options=query,
                        show_progress=self.progress)  # fmt: skip
            h, w = run.reader.size
            header = {"schema": SCHEMA, "video": rel, "source": stamp, "width": w, "height": h,
                      "fps": run.reader.fps, "phrases": self.classes,
                      "settings": self.settings.as_dict()}  # fmt: skip
            final = video_state_path(self.out, rel)
            try:
                with TrackWriter(final.parent, Path(rel).name, run.reader.size, run.reader.fps,
                                 header, video=False) as writer:  # fmt: skip
                    for index, frame, dets in run.with_frames():
                        writer.write(index, frame, dets)
                    tracks = [t.summary() for t in run.tracker.tracks.values()]
                    writer.close({"tracks": tracks, "stats": vars(run.stats).copy()})
            finally:
                run.close()
        except _VIDEO_FAILURES as exc:
            fail(rel, one_line(exc))
            return None
        if _stamp(path) != stamp:
            final.unlink(missing_ok=True)
            fail(rel, "the file changed while it was labeled; run again to label it")
            return None
        return LabeledVideo(rel, final, h, w, float(run.reader.fps), run.stats.frames, stamp)


def _stamp(path: Path) -> dict[str, int] | None:
    try:
        return source_stamp(path)
    except OSError:
        return None


def export_videos(
    out_dir: str | os.PathLike,
    entries: Sequence[LabeledVideo],
    classes: Sequence[str],
    fmt: str,
    config: Mapping[str, Any],
    frames: Mapping[str, Path] | None = None,
) -> tuple[list[Path], Counter]:
    """Write the dataset of tracked videos (sorted by ``rel``) in ``fmt``.

    Args:
        out_dir: DATASET_DIR.
        entries: The tracked videos.
        classes: Class names, in category order.
        fmt: ``"coco"`` or ``"mot"``.
        config: The run's config (``video.max_frames`` is used to extract frames).
        frames: ``{rel: source video}``: also write each video's frames into ``SEQ/img1``
            (None: no frames). Frames folders an earlier export wrote for sequences not in
            ``entries`` are removed either way (:func:`~grounded_sam.labeling.frames.
            prune_frames`).

    Returns:
        ``(files and folders written, tracks per class)``.
    """
    check_video_format(fmt)
    out = Path(out_dir)
    ordered = sorted(entries, key=lambda e: e.rel)
    seqs = flat_stems([e.rel for e in ordered])
    tracks: Counter = Counter()
    for entry in ordered:
        tracks.update(t["label"] for t in entry.load().get("tracks", []))
    if frames is not None:
        max_frames = (config.get("video") or {}).get("max_frames")
        for entry, seq in zip(ordered, seqs, strict=True):
            extract_frames(frames[entry.rel], out / seq, entry.num_frames, max_frames,
                           stamp=entry.stamp)  # fmt: skip
    if fmt == "coco":
        files = write_coco_video(out, ordered, seqs, list(classes), config)
    else:
        files = write_mot(out, ordered, seqs, list(classes))
    prune_frames(out, set(seqs))  # frames of sequences gone from the dataset
    record_exported(out, ordered)
    return files, tracks


def export_video_dataset(out_dir: str | os.PathLike, fmt: str = "coco") -> list[Path]:
    """Export (again) the videos saved in ``out_dir``, e.g. in another format; no model needed.

    The videos are those the last export wrote
    (:func:`~grounded_sam.labeling.video_state.exported_videos`), not every state file.

    Raises:
        FileNotFoundError: ``out_dir`` holds no labeling run.
        ValueError: An image format, ``out_dir`` holds a dataset of images, or a saved
            result is unreadable (the message names the file).
        grounded_sam.labeling.lock.DatasetBusyError: Another run holds ``out_dir``.
    """
    out = Path(out_dir)
    check_video_format(fmt)
    with dataset_lock(out):
        config = read_run_config(out)
        if "video" not in config:
            raise ValueError(
                f"{out} holds a dataset of images: export it with "
                "grounded_sam.labeling.export_dataset (coco, yolo or voc)."
            )
        files, _ = export_videos(out, exported_videos(out), config["classes"], fmt, config)
        return files


def label_video_folder(
    gs: Engine,
    source: str | os.PathLike,
    classes: str | Sequence[str],
    out_dir: str | os.PathLike,
    fmt: str = "coco",
    **kwargs: Any,
) -> VideoLabelReport:
    """Track every video under ``source`` (or the one video file) and export a dataset.

    ``prepare_video_labeling`` + ``label_videos``; see :func:`label_videos` for ``kwargs``.

    Raises:
        ValueError: ``source`` holds no videos (the message names the extensions) or also
            images.

    Example:
        >>> report = label_video_folder(gs, "clips/", "person, car", "clips-mot",
        ...                             fmt="mot", every=10)  # doctest: +SKIP
    """
    found = prepare_video_labeling(source, out_dir)
    if found is None:
        if not Path(source).exists():
            raise FileNotFoundError(f"Videos folder not found: {source}")
        raise ValueError(
            f"No videos found in {source} (looked for {', '.join(VIDEO_EXTENSIONS)} in any "
            f"case, in all subfolders; images ({', '.join(IMAGE_EXTENSIONS)}) are labeled "
            "with label_folder)."
        )
    every = kwargs.pop("every", None)
    if every is not None:
        base = kwargs.pop("settings", None) or TrackerSettings()
        kwargs["settings"] = TrackerSettings(**{**base.as_dict(), "every": every})
    root, videos = found
    return label_videos(gs, root, videos, classes, out_dir, fmt, **kwargs)
