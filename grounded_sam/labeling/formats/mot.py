"""MOTChallenge: one sequence folder per video, as TrackEval and py-motmetrics read them.

Layout::

    seqmap.txt           "name" then one sequence name a line (TrackEval's SEQMAP_FILE)
    SEQ/seqinfo.ini      [Sequence] name, imDir=img1, frameRate, seqLength, imWidth,
                         imHeight, imExt=.jpg
    SEQ/gt/gt.txt        frame,id,bb_left,bb_top,bb_width,bb_height,1,class,1
    SEQ/gt/scores.txt    the confidence of each gt.txt line, same order (sidecar)

``gt.txt`` has MOT17's 9 ground-truth columns: 1-based frame number, the track id (per
sequence, 1, 2, ...), the box in pixels (left, top, width, height of the mask's tight box,
as ``grounded-sam track``'s ``.mot.txt``), 1 (consider the entry), the class (category id:
the 1-based index of the class in ``--classes``, not MOT17's class ids; see below) and
visibility 1. A ground-truth file has no
confidence column, so the grounding confidence is in the ``scores.txt`` sidecar (as YOLO's
``scores/``). The frames are written into ``SEQ/img1/`` only with ``label --frames``
(:mod:`grounded_sam.labeling.frames`): the evaluation tools (TrackEval, py-motmetrics) read
only ``seqinfo.ini`` and ``gt/gt.txt``, the video is the source of the pixels, and JPEG
frames take many times the video's size; training a detector or tracker on the dataset
needs them.

Evaluating against it with TrackEval (``trackeval/datasets/mot_challenge_2d_box.py``,
``MotChallenge2DBox``): that dataset class evaluates one class, ``pedestrian`` = class 1 (the
only valid ``CLASSES_TO_EVAL``). With its default ``DO_PREPROC=True`` (any ``BENCHMARK`` but
MOT15) a gt class id outside 1-13 is an error, tracker boxes matching gt of classes 2, 7, 8
and 12 (MOT17's person_on_vehicle, static_person, distractor, reflection; also 6 with
``BENCHMARK='MOT20'``) are dropped as distractors, and gt rows of every class but 1 are not
evaluated. Here the class ids are the 1-based indices of ``--classes``, not MOT17's classes:
with ``--classes "person, car"`` the cars (2) would be distractors. So evaluate a dataset of
more than one class with ``DO_PREPROC=False`` (then every gt row is evaluated, all classes
as one), or one class at a time (a copy of ``gt.txt`` with only the rows of class ``k``, and
the tracker's rows of that class). TrackEval also refuses a tracker file whose class column
(8th) is above 1.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from grounded_sam.export.files import atomic_write_text
from grounded_sam.labeling.video_state import LabeledVideo
from grounded_sam.video.writers import mot_box

__all__ = ["gt_lines", "seqinfo", "write_mot"]

logger = logging.getLogger(__name__)

SEQMAP = "seqmap.txt"
"""The list of sequences in DATASET_DIR."""


def seqinfo(seq: str, video: LabeledVideo) -> str:
    """The ``seqinfo.ini`` text of a sequence."""
    fps = video.fps
    rate = str(int(fps)) if float(fps).is_integer() else f"{fps:g}"
    return (
        "[Sequence]\n"
        f"name={seq}\n"
        "imDir=img1\n"
        f"frameRate={rate}\n"
        f"seqLength={video.num_frames}\n"
        f"imWidth={video.width}\n"
        f"imHeight={video.height}\n"
        "imExt=.jpg\n"
    )


def gt_lines(doc: dict) -> tuple[str, str]:
    """``(gt.txt text, scores.txt text)`` of one saved video document (frames in order)."""
    gt, scores = [], []
    for frame in doc["frames"]:
        n = int(frame["frame"]) + 1
        for rec in frame["instances"]:
            box = mot_box(rec["box"])  # the columns of ``track``'s .mot.txt
            gt.append(f"{n},{int(rec['track_id'])},{box},1,{int(rec['class_id']) + 1},1\n")
            conf = rec.get("confidence")
            scores.append(f"{float(conf):.6f}\n" if conf is not None else "nan\n")
    return "".join(gt), "".join(scores)


def write_mot(
    out: Path, videos: Sequence[LabeledVideo], seqs: Sequence[str], classes: Sequence[str]
) -> list[Path]:
    """Write every sequence folder and ``seqmap.txt`` (see the module docstring).

    Sequences a previous export listed in ``seqmap.txt`` that this one does not have lose the
    files this writer made (``seqinfo.ini``, ``gt/gt.txt``, ``gt/scores.txt``); other files
    are never touched.

    Args:
        out: DATASET_DIR.
        videos: The tracked videos, in dataset order.
        seqs: Each video's sequence name (unique; a folder name).
        classes: Class names (``class`` column = index + 1).

    Returns:
        ``seqmap.txt`` and the sequence folders.
    """
    del classes  # the class column is the category index; names are in the run config
    folders = []
    for video, seq in zip(videos, seqs, strict=True):
        doc = video.load()
        gt, scores = gt_lines(doc)
        folder = out / seq
        atomic_write_text(folder / "gt" / "gt.txt", gt)
        atomic_write_text(folder / "gt" / "scores.txt", scores)
        atomic_write_text(folder / "seqinfo.ini", seqinfo(seq, video))
        folders.append(folder)
    _prune(out, set(seqs))
    seqmap = atomic_write_text(out / SEQMAP, "name\n" + "".join(f"{s}\n" for s in seqs))
    return [seqmap, *folders]


def _prune(out: Path, keep: set[str]) -> None:
    """Remove this writer's files of sequences an earlier export listed and this one has not."""
    path = out / SEQMAP
    if not path.is_file():
        return
    for old in path.read_text(encoding="utf-8").splitlines()[1:]:
        old = old.strip()
        if not old or old in keep or "/" in old or old.startswith("."):
            continue
        folder = out / old
        for rel in ("gt/gt.txt", "gt/scores.txt", "seqinfo.ini"):
            (folder / rel).unlink(missing_ok=True)
        for d in (folder / "gt", folder):
            try:
                d.rmdir()  # only when empty
            except OSError:
                pass
        logger.info("Removed sequence %s of an earlier export", old)
