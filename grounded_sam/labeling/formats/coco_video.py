"""COCO-video: ``annotations.json`` in the video extension of COCO that TAO-style tools read.

One document for all videos, plain COCO plus the video keys (TAO's names, and the aliases of
mmtracking's ``CocoVID``)::

    {"info": {..., "grounded_sam": <run config>},
     "categories": [{"id": 1, "name": "person", "supercategory": "object"}, ...],
     "videos": [{"id": 1, "name": SEQ, "file": "sub/clip.mp4", "width": W, "height": H,
                 "length": T, "fps": 30.0, "neg_category_ids": [2],
                 "not_exhaustive_category_ids": []}, ...],
     "images": [{"id": 1, "video_id": 1, "frame_index": 0, "frame_id": 0,
                 "file_name": "SEQ/img1/000001.jpg", "width": W, "height": H}, ...],
     "tracks": [{"id": 1, "category_id": 1, "video_id": 1}, ...],
     "annotations": [{"id": 1, "image_id": 1, "video_id": 1, "category_id": 1,
                      "track_id": 1, "instance_id": 1, "segmentation": RLE, "area": A,
                      "bbox": [x, y, w, h], "iscrowd": 0, "score": 0.87,
                      "object_score": 0.98, "grounded": true}, ...]}

Every frame of a video is an image (also those without annotations), ``frame_index`` 0-based.
``file_name`` is the frame's file relative to DATASET_DIR in MOTChallenge's layout
(``SEQ/img1/<frame + 1, 6 digits>.jpg``), written only with ``label --frames``
(:mod:`grounded_sam.labeling.frames`; by default the video is the source of the pixels).
``track_id`` / ``instance_id`` are unique over the dataset (a video's track ids are offset by
the tracks of the videos before it); ``category_id`` of an annotation is the label of that
frame's detection, that of a track (``tracks``) its last matched label. ``bbox`` is xywh
pixels of the mask's tight box, ``segmentation`` exact COCO RLE (iscrowd 0, as the image COCO
export); ``score`` is the grounding confidence of the detection the track last matched,
``object_score`` the sigmoid of SAM 2's object-score logit (in [0, 1]; 1.0 on a frame where the
track was grounded with a mask prompt) and ``grounded`` whether that frame's grounding matched
or started the track.

TAO's per-video keys are written as TrackEval's TAO loader (``trackeval/datasets/tao.py``,
``TAO.__init__``) reads them: ``neg_category_ids`` are the categories with no annotation in
that video (every class was looked for on every key frame, so a class not found is one the
labels say is absent: a tracker's box of it there counts as a false positive) and
``not_exhaustive_category_ids`` is empty (every class is labeled exhaustively, as far as the
grounding goes). Its loader also reads ``videos[].name`` / ``id``, ``images[].id`` /
``video_id`` / ``frame_index``, ``annotations[].bbox`` (xywh) / ``track_id`` / ``image_id`` /
``video_id`` / ``category_id``, ``tracks[].category_id`` and ``categories[].id`` / ``name``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from grounded_sam.export.files import atomic_write_json
from grounded_sam.labeling.frames import FRAMES_DIR, frame_name
from grounded_sam.labeling.video_state import LabeledVideo

__all__ = ["frame_file_name", "write_coco_video"]


def frame_file_name(seq: str, frame_index: int) -> str:
    """A frame's file relative to DATASET_DIR: ``SEQ/img1/000001.jpg`` for frame index 0."""
    return f"{seq}/{FRAMES_DIR}/{frame_name(frame_index)}"


def write_coco_video(
    out: Path,
    videos: Sequence[LabeledVideo],
    seqs: Sequence[str],
    classes: Sequence[str],
    config: Mapping[str, Any],
) -> list[Path]:
    """Write ``out/annotations.json`` (see the module docstring).

    Args:
        out: DATASET_DIR.
        videos: The tracked videos, in dataset order.
        seqs: Each video's sequence name (unique).
        classes: Class names, in category order (category id = index + 1).
        config: The run's config (stored in ``info.grounded_sam``).

    Returns:
        ``[out / "annotations.json"]``.
    """
    categories = [
        {"id": k + 1, "name": name, "supercategory": "object"} for k, name in enumerate(classes)
    ]
    ids = {name: k + 1 for k, name in enumerate(classes)}
    videos_out: list[dict[str, Any]] = []
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    tracks: list[dict[str, Any]] = []
    offset = 0
    for video_id, (video, seq) in enumerate(zip(videos, seqs, strict=True), start=1):
        doc = video.load()
        h, w = video.height, video.width
        videos_out.append(
            {"id": video_id, "name": seq, "file": video.rel, "width": w, "height": h,
             "length": int(doc["num_frames"]), "fps": video.fps,
             "not_exhaustive_category_ids": []}
        )  # fmt: skip
        first_ann = len(annotations)
        top = 0
        for frame in doc["frames"]:
            index = int(frame["frame"])
            image_id = len(images) + 1
            images.append(
                {"id": image_id, "video_id": video_id, "frame_index": index, "frame_id": index,
                 "file_name": frame_file_name(seq, index), "width": w, "height": h}
            )  # fmt: skip
            for rec in frame["instances"]:
                local = int(rec["track_id"])
                top = max(top, local)
                x1, y1, x2, y2 = (float(v) for v in rec["box"])
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": image_id,
                        "video_id": video_id,
                        "category_id": int(rec["class_id"]) + 1,
                        "track_id": offset + local,
                        "instance_id": offset + local,
                        "segmentation": rec["mask"],
                        "area": rec["area"],
                        "bbox": [x1, y1, x2 - x1, y2 - y1],
                        "iscrowd": 0,
                        "score": rec["confidence"],
                        "object_score": rec.get("object_score"),
                        "grounded": rec.get("grounded"),
                    }
                )
        for t in doc.get("tracks", []):
            local = int(t["track_id"])
            top = max(top, local)
            tracks.append(
                {"id": offset + local, "category_id": ids.get(t["label"], int(t["class_id"]) + 1),
                 "video_id": video_id}
            )  # fmt: skip
        present = {a["category_id"] for a in annotations[first_ann:]}
        videos_out[-1]["neg_category_ids"] = [c["id"] for c in categories if c["id"] not in present]
        offset += top
    result = {
        "info": {
            "description": "Video labeled by grounded_sam (text-prompted tracking)",
            "grounded_sam": dict(config),
        },
        "licenses": [],
        "categories": categories,
        "videos": videos_out,
        "images": images,
        "tracks": sorted(tracks, key=lambda t: t["id"]),
        "annotations": annotations,
    }
    return [atomic_write_json(out / "annotations.json", result)]
