"""Labeling videos: COCO-video and MOT datasets from tracked videos, resumable per video."""

from __future__ import annotations

import configparser
import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO

from grounded_sam import EverythingSettings
from grounded_sam.labeling import STATE_DIRNAME, export_dataset, labeling_config
from grounded_sam.labeling.video import (
    export_video_dataset,
    label_video_folder,
    label_videos,
    prepare_video_labeling,
)
from grounded_sam.video.types import TrackerSettings
from tests.labeling.videos import (
    CLASSES,
    ColourEngine,
    ResettingPropagator,
    clips,
    write_lossless,
)

SETTINGS = TrackerSettings(every=3, lost_after=2)


def config() -> dict:
    return labeling_config(
        CLASSES, sam="fake-sam", clip="fake-clip", proposal_settings=EverythingSettings()
    )


@pytest.fixture
def video_folder(tmp_path: Path) -> Path:
    root = tmp_path / "videos"
    for rel, video in clips().items():
        write_lossless(video, root / rel)
    (root / "notes.txt").write_text("not a video")
    return root


def run(engine, folder: Path, out: Path, fmt: str = "coco", prop=None, **kwargs):
    root, videos = prepare_video_labeling(folder, out)
    failures: list[tuple[str, str]] = []
    report = label_videos(
        engine, root, videos, CLASSES, out, fmt,
        settings=kwargs.pop("settings", SETTINGS), propagator=prop or ResettingPropagator(),
        config=kwargs.pop("config", config()), progress=False,
        on_failure=lambda rel, why: failures.append((rel, why)), **kwargs,
    )  # fmt: skip
    return report, failures


def test_coco_video_loads_in_pycocotools_and_holds_the_objects(video_folder, tmp_path):
    out = tmp_path / "ds"
    report, failures = run(ColourEngine(), video_folder, out)
    assert failures == [] and (report.total, report.labeled, report.reused) == (2, 2, 0)
    assert report.frames == 9 + 6
    doc = json.loads((out / "annotations.json").read_text())
    assert [(v["id"], v["name"], v["file"], v["width"], v["height"], v["length"])
            for v in doc["videos"]] == [(1, "a", "a.avi", 160, 120, 9),
                                        (2, "sub__b", "sub/b.avi", 128, 96, 6)]  # fmt: skip
    assert [c["name"] for c in doc["categories"]] == CLASSES
    assert len(doc["images"]) == 15  # every frame, with or without objects
    first = doc["images"][0]
    assert (first["video_id"], first["frame_index"]) == (1, 0)
    assert first["file_name"] == "a/img1/000001.jpg"
    assert doc["images"][9]["file_name"] == "sub__b/img1/000001.jpg"
    assert not (out / "a").exists()  # no frames without frames=True
    coco = COCO(str(out / "annotations.json"))
    assert len(coco.getImgIds()) == 15 and len(coco.getAnnIds()) == len(doc["annotations"])
    # oracle: every annotation's mask is exactly its object's visible pixels on that frame
    videos = list(clips().values())
    images = {img["id"]: img for img in doc["images"]}
    tracks_of_video: dict[int, set[int]] = {1: set(), 2: set()}
    for ann in doc["annotations"]:
        img = images[ann["image_id"]]
        video = videos[img["video_id"] - 1]
        truth = video.masks(img["frame_index"])
        mask = coco.annToMask(ann).astype(bool)
        matches = [i for i, m in truth.items() if np.array_equal(m, mask)]
        assert len(matches) == 1, ann["id"]
        obj = video.objects[matches[0]]
        assert coco.cats[ann["category_id"]]["name"] == obj.label
        assert ann["track_id"] == ann["instance_id"] and ann["iscrowd"] == 0
        x, y, w, h = ann["bbox"]
        ys, xs = np.nonzero(mask)
        assert (x, y, x + w, y + h) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        assert ann["score"] == pytest.approx(0.9) and ann["area"] == mask.sum()
        tracks_of_video[img["video_id"]].add(ann["track_id"])
    # 3 objects in a (one enters late), 2 in b; ids unique over the dataset
    assert tracks_of_video == {1: {1, 2, 3}, 2: {4, 5}}
    assert [(t["id"], t["video_id"]) for t in doc["tracks"]] == [
        (1, 1), (2, 1), (3, 1), (4, 2), (5, 2)
    ]  # fmt: skip
    assert report.instances == {"red box": 2, "blue disc": 1, "green box": 2}
    assert doc["info"]["grounded_sam"]["video"]["tracker"]["every"] == 3


def test_mot_layout_parses(video_folder, tmp_path):
    out = tmp_path / "mot"
    report, _ = run(ColourEngine(), video_folder, out, "mot")
    assert report.exported[0] == out / "seqmap.txt"
    assert (out / "seqmap.txt").read_text() == "name\na\nsub__b\n"
    coco_out = tmp_path / "coco"
    run(ColourEngine(), video_folder, coco_out)
    doc = json.loads((coco_out / "annotations.json").read_text())
    for video_id, seq, size, length in ((1, "a", (160, 120), 9), (2, "sub__b", (128, 96), 6)):
        ini = configparser.ConfigParser()
        ini.read(out / seq / "seqinfo.ini")
        s = ini["Sequence"]
        assert (s["name"], s["imDir"], s["imExt"]) == (seq, "img1", ".jpg")
        assert (int(s["seqLength"]), int(s["imWidth"]), int(s["imHeight"])) == (length, *size)
        assert int(s["frameRate"]) == 10
        rows = [line.split(",") for line in (out / seq / "gt" / "gt.txt").read_text().splitlines()]
        scores = (out / seq / "gt" / "scores.txt").read_text().splitlines()
        assert rows and len(scores) == len(rows) and all(len(r) == 9 for r in rows)
        values = np.array(rows, dtype=float)
        assert values[:, 0].min() == 1 and values[:, 0].max() <= length  # 1-based frames
        assert set(values[:, 6]) == {1.0} and set(values[:, 8]) == {1.0}
        assert set(values[:, 7]) <= {1.0, 2.0, 3.0}
        assert all(float(x) == pytest.approx(0.9) for x in scores)
        # the same boxes as the COCO-video annotations (MOT ids are per sequence)
        anns = [a for a in doc["annotations"] if a["video_id"] == video_id]
        frames = {i["id"]: i["frame_index"] for i in doc["images"]}
        offset = min(a["track_id"] for a in anns) - 1
        coco_rows = sorted(
            (frames[a["image_id"]] + 1, a["track_id"] - offset, *np.round(a["bbox"], 2))
            for a in anns
        )
        mot_rows = sorted(tuple(r[:6]) for r in values.tolist())
        np.testing.assert_allclose(np.array(mot_rows), np.array(coco_rows, float))


def test_interrupted_run_resumes_with_the_unfinished_video(video_folder, tmp_path):
    full = tmp_path / "full"
    run(ColourEngine(), video_folder, full)

    out = tmp_path / "ds"
    engine = ColourEngine()
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C on frame 3 of the second video
        run(engine, video_folder, out, prop=ResettingPropagator((1, 3, KeyboardInterrupt())))
    state = out / STATE_DIRNAME / "videos"
    assert (state / "a.avi.json").is_file()  # the finished video is saved
    assert not (state / "sub" / "b.avi.json").exists()
    assert [p.name for p in state.rglob(".*")] == []  # no half-written file anywhere
    assert not (out / "annotations.json").exists()
    # a killed run's temporary file is cleared by the next run
    (state / "sub").mkdir(exist_ok=True)
    (state / "sub" / ".b.avi.json.k1ll3d.tmp").write_text('{"frames": [')

    engine = ColourEngine()
    report, failures = run(engine, video_folder, out)
    assert (report.reused, report.labeled, failures) == (1, 1, [])
    assert engine.indexed == 2  # only b's key frames (0, 3) were grounded again
    assert list(state.rglob("*.tmp")) == []
    a, b = (json.loads((d / "annotations.json").read_text()) for d in (full, out))
    assert a == b

    # nothing left to do: no model is loaded; another format from the saved results
    def no_models():
        raise AssertionError("models loaded although every video was done")

    report, _ = run(no_models, video_folder, out, "mot")
    assert (report.reused, report.labeled) == (2, 0)
    assert (out / "a" / "gt" / "gt.txt").is_file()
    gt = (out / "a" / "gt" / "gt.txt").read_text()
    (out / "a" / "gt" / "gt.txt").unlink()
    (out / "annotations.json").unlink()
    assert export_video_dataset(out, "coco") == [out / "annotations.json"]
    assert json.loads((out / "annotations.json").read_text()) == a
    assert export_video_dataset(out, "mot")[0] == out / "seqmap.txt"
    assert (out / "a" / "gt" / "gt.txt").read_text() == gt
    with pytest.raises(ValueError, match="holds a dataset of videos"):
        export_dataset(out, "yolo")
    with pytest.raises(ValueError, match="image format"):
        export_video_dataset(out, "voc")
    # other tracking settings refuse to resume
    with pytest.raises(ValueError, match="video differ.*--restart"):
        run(no_models, video_folder, out, settings=TrackerSettings(every=5))


def test_failed_and_changed_videos_are_reported_and_left_out(video_folder, tmp_path):
    (video_folder / "broken.mp4").write_bytes(b"not a video at all")
    out = tmp_path / "ds"
    report, failures = run(ColourEngine(), video_folder, out)
    assert (report.labeled, [r for r, _ in failures]) == (2, ["broken.mp4"])
    assert "not a video that OpenCV or PyAV can read" in failures[0][1]
    doc = json.loads((out / "annotations.json").read_text())
    assert [v["file"] for v in doc["videos"]] == ["a.avi", "sub/b.avi"]
    # a changed video is tracked again, the unchanged one reused
    write_lossless(clips()["sub/b.avi"], video_folder / "a.avi")
    (video_folder / "broken.mp4").unlink()
    engine = ColourEngine()
    report, _ = run(engine, video_folder, out)
    assert (report.reused, report.labeled) == (1, 1)
    doc = json.loads((out / "annotations.json").read_text())
    assert doc["videos"][0]["length"] == 6


def test_scan_errors(video_folder, tmp_path):
    out = tmp_path / "ds"
    # one video file
    root, videos = prepare_video_labeling(video_folder / "a.avi", out)
    assert (root, videos) == (video_folder, [video_folder / "a.avi"])
    # a folder of images only: not a video job
    images = tmp_path / "images"
    images.mkdir()
    (images / "x.png").write_bytes(b"")
    assert prepare_video_labeling(images, out) is None
    # mixed: refused, naming both
    (video_folder / "sub" / "frame.png").write_bytes(b"")
    with pytest.raises(ValueError, match=r"both videos \(2, e.g. a.avi\) and images \(1"):
        prepare_video_labeling(video_folder, out)
    with pytest.raises(ValueError, match="contains the videos folder"):
        prepare_video_labeling(video_folder / "a.avi", video_folder.parent)
    with pytest.raises(ValueError, match="max_frames"):
        label_videos(ColourEngine(), video_folder, [], CLASSES, out, max_frames=0, config=config())
    with pytest.raises(ValueError, match="image format.*coco or mot"):
        label_videos(ColourEngine(), video_folder, [], CLASSES, out, "yolo", config=config())
    with pytest.raises(ValueError, match="No videos found in"):
        label_video_folder(ColourEngine(), images, CLASSES, out)


def test_real_engine_tracks_through_the_same_path_as_track(tmp_path, tiny_model_specs):
    """The tiny random SAM 2.1 + CLIP engine: propagator from its own SAM, config from it."""
    from grounded_sam import GroundedSAM
    from grounded_sam.video.tiny import save_tiny_sam2_video

    sam = save_tiny_sam2_video(tmp_path / "sam2")
    gs = GroundedSAM.from_pretrained(
        sam=str(sam), clip=tiny_model_specs[1], device="cpu", threshold=0.0,
        proposal_settings=EverythingSettings(points_per_side=4, pred_iou_thresh=0.0,
                                             stability_score_thresh=0.5),
    )  # fmt: skip
    clip = write_lossless(clips()["a.avi"], tmp_path / "in" / "clip.avi")
    out = tmp_path / "ds"
    report = label_video_folder(gs, clip, "red box, blue disc", out, every=2, max_frames=3,
                                progress=False)  # fmt: skip
    assert (report.total, report.labeled, report.failed, report.frames) == (1, 1, [], 3)
    doc = json.loads((out / "annotations.json").read_text())
    cfg = doc["info"]["grounded_sam"]
    assert cfg["sam"] == str(sam) and cfg["video"]["tracker"]["every"] == 2
    assert cfg["video"]["max_frames"] == 3 and len(doc["images"]) == 3
    assert doc["annotations"], "random weights gave no detection: nothing was checked"
    COCO(str(out / "annotations.json"))
    # the state file is the track command's JSON: same records
    state = json.loads((out / STATE_DIRNAME / "videos" / "clip.avi.json").read_text())
    assert state["num_frames"] == 3 and state["stats"]["key_frames"] == 2
    n = sum(f["num_instances"] for f in state["frames"])
    assert n == len(doc["annotations"])


def test_frames_are_written_where_both_formats_name_them(video_folder, tmp_path):
    from PIL import Image

    out = tmp_path / "ds"
    run(ColourEngine(), video_folder, out, "coco", frames=True)
    doc = json.loads((out / "annotations.json").read_text())
    videos = list(clips().values())
    for img in doc["images"]:
        path = out / img["file_name"]
        pixels = np.asarray(Image.open(path).convert("RGB"), dtype=float)
        truth = videos[img["video_id"] - 1].frame(img["frame_index"])
        assert pixels.shape == truth.shape and np.abs(pixels - truth).mean() < 4  # JPEG
    assert sorted(p.name for p in (out / "sub__b" / "img1").iterdir()) == [
        f"{i:06d}.jpg" for i in range(1, 7)
    ]
    assert [p.name for p in out.rglob(".img1*")] == []
    # the MOT export of the same run keeps the complete frame folders (not decoded again)
    stamp = (out / "a" / "img1" / "000001.jpg").stat().st_mtime_ns
    run(ColourEngine(), video_folder, out, "mot", frames=True)
    assert (out / "a" / "img1" / "000001.jpg").stat().st_mtime_ns == stamp
    ini = configparser.ConfigParser()
    ini.read(out / "a" / "seqinfo.ini")
    assert len(list((out / "a" / ini["Sequence"]["imDir"]).glob("*.jpg"))) == 9


def test_frames_of_a_replaced_video_are_written_again(video_folder, tmp_path):
    """A clip replaced by another of the same length gets its own frames, not the old JPEGs."""
    from dataclasses import replace

    from PIL import Image

    out = tmp_path / "ds"
    run(ColourEngine(), video_folder, out, "mot", frames=True)
    old = np.asarray(Image.open(out / "a" / "img1" / "000001.jpg").convert("RGB"), float)
    other = replace(clips()["sub/b.avi"], num_frames=9, size=(120, 160))  # same length as a
    write_lossless(other, video_folder / "a.avi")
    report, failures = run(ColourEngine(), video_folder, out, "mot", frames=True)
    assert (report.reused, report.labeled, failures) == (1, 1, [])
    names = sorted(p.name for p in (out / "a" / "img1").glob("*.jpg"))
    assert names == [f"{i:06d}.jpg" for i in range(1, 10)]
    for k in (0, 8):
        pixels = np.asarray(Image.open(out / "a" / "img1" / f"{k + 1:06d}.jpg").convert("RGB"),
                            dtype=float)  # fmt: skip
        assert np.abs(pixels - other.frame(k)).mean() < 4, k  # the new clip's frames
    assert np.abs(old - other.frame(0)).mean() > 4  # (the old frames were different)
    # a folder without the record of its source (an older layout) is written again too
    (out / "sub__b" / ".frames_source.json").unlink()
    stamp = (out / "sub__b" / "img1" / "000001.jpg").stat().st_mtime_ns
    run(ColourEngine(), video_folder, out, "mot", frames=True)
    assert (out / "sub__b" / "img1" / "000001.jpg").stat().st_mtime_ns != stamp
    assert (out / "sub__b" / ".frames_source.json").is_file()


def _load_as_trackeval_tao(doc: dict) -> dict:
    """The ground-truth key accesses of TrackEval's TAO loader, replicated (no TrackEval here).

    JonathonLuiten/TrackEval ``trackeval/datasets/tao.py`` (commit 162cdd0): ``TAO.__init__``
    lines 56-83 (``_merge_categories`` over annotations + tracks, ``videos[].name`` / ``id`` /
    ``neg_category_ids`` / ``not_exhaustive_category_ids``, ``images[].video_id``,
    ``categories[].id`` / ``name``), ``_compute_vid_mappings`` (``annotations[].bbox`` /
    ``video_id`` / ``track_id`` / ``category_id`` / ``image_id``, ``images[].frame_index``) and
    ``_compute_image_to_timestep_mappings``. A missing key is a KeyError, as there.
    """
    for ann in doc["annotations"] + doc["tracks"]:  # _merge_categories
        ann["category_id"] = ann["category_id"]
    images = {img["id"]: img for img in doc["images"]}
    seq_id = {vid["name"].replace("/", "-"): vid["id"] for vid in doc["videos"]}
    tracks: dict = {vid["id"]: {} for vid in doc["videos"]}
    imgs: dict = {vid["id"]: {} for vid in doc["videos"]}
    for ann in doc["annotations"]:  # _compute_vid_mappings
        ann["area"] = ann["bbox"][2] * ann["bbox"][3]
        track = tracks[ann["video_id"]].setdefault(
            ann["track_id"], {"category_id": ann["category_id"], "annotations": []}
        )
        track["annotations"].append(ann)
        imgs[ann["video_id"]].setdefault(ann["image_id"], []).append(ann)
    for vid_tracks in tracks.values():
        for track in vid_tracks.values():
            track["annotations"].sort(key=lambda a: images[a["image_id"]]["frame_index"])
    lengths = {vid["id"]: 0 for vid in doc["videos"]}
    for img in doc["images"]:
        lengths[img["video_id"]] += 1
    timesteps = {
        vid: {i: t for t, i in enumerate(sorted(ids, key=lambda i: images[i]["frame_index"]))}
        for vid, ids in imgs.items()
    }
    classes = {
        vid["id"]: {
            "pos_cat_ids": sorted({t["category_id"] for t in tracks[vid["id"]].values()}),
            "neg_cat_ids": vid["neg_category_ids"],
            "not_exhaustively_labeled_cat_ids": vid["not_exhaustive_category_ids"],
        }
        for vid in doc["videos"]
    }
    seen = {c for vid in seq_id.values() for c in classes[vid]["pos_cat_ids"]}
    valid = [cat["name"] for cat in doc["categories"] if cat["id"] in seen]
    return {"seqs": seq_id, "lengths": lengths, "timesteps": timesteps, "classes": classes,
            "valid_classes": valid}  # fmt: skip


def test_coco_video_loads_as_trackeval_tao_reads_it(video_folder, tmp_path):
    out = tmp_path / "ds"
    run(ColourEngine(), video_folder, out)
    doc = json.loads((out / "annotations.json").read_text())
    tao = _load_as_trackeval_tao(doc)
    assert tao["seqs"] == {"a": 1, "sub__b": 2} and tao["lengths"] == {1: 9, 2: 6}
    assert sorted(tao["valid_classes"]) == sorted(CLASSES)
    # a holds all three classes, b no blue disc (category 2): b's negative
    assert tao["classes"][1] == {"pos_cat_ids": [1, 2, 3], "neg_cat_ids": [],
                                 "not_exhaustively_labeled_cat_ids": []}  # fmt: skip
    assert tao["classes"][2] == {"pos_cat_ids": [1, 3], "neg_cat_ids": [2],
                                 "not_exhaustively_labeled_cat_ids": []}  # fmt: skip
    assert len(tao["timesteps"][1]) == 9  # every frame of a has an annotation


def test_export_again_writes_the_last_runs_videos_only(video_folder, tmp_path):
    """A changed video that fails to track again, or a deleted one, is not exported again."""
    out = tmp_path / "ds"
    run(ColourEngine(), video_folder, out)
    state = out / STATE_DIRNAME / "videos"
    # a.avi replaced by something unreadable: its old result is discarded, not re-exported
    (video_folder / "a.avi").write_bytes(b"not a video at all")
    report, failures = run(ColourEngine(), video_folder, out)
    assert [r for r, _ in failures] == ["a.avi"] and report.reused == 1
    assert not (state / "a.avi.json").exists()
    files = [v["file"] for v in json.loads((out / "annotations.json").read_text())["videos"]]
    assert files == ["sub/b.avi"]
    export_video_dataset(out, "coco")
    files = [v["file"] for v in json.loads((out / "annotations.json").read_text())["videos"]]
    assert files == ["sub/b.avi"]
    # a video deleted from the source: left out by label and by the export from the state
    write_lossless(clips()["a.avi"], video_folder / "a.avi")
    (video_folder / "sub" / "b.avi").unlink()
    report, failures = run(ColourEngine(), video_folder, out)
    assert failures == [] and report.labeled == 1
    assert (state / "sub" / "b.avi.json").is_file()  # kept: resumable if it comes back
    for fmt in ("mot", "coco"):
        export_video_dataset(out, fmt)
    files = [v["file"] for v in json.loads((out / "annotations.json").read_text())["videos"]]
    assert files == ["a.avi"]
    assert (out / "seqmap.txt").read_text() == "name\na\n"


def test_a_corrupt_state_file_is_a_one_line_error_naming_it(video_folder, tmp_path):
    out = tmp_path / "ds"
    run(ColourEngine(), video_folder, out)
    bad = out / STATE_DIRNAME / "videos" / "a.avi.json"
    bad.write_text('{"frames": [', encoding="utf-8")
    with pytest.raises(ValueError, match=r"saved result .*a\.avi\.json is unreadable") as err:
        export_video_dataset(out, "mot")
    assert "\n" not in str(err.value) and "delete it" in str(err.value)
    (out / STATE_DIRNAME / "exported_videos.json").unlink()  # a run from before the list
    with pytest.raises(ValueError, match=r"a\.avi\.json is unreadable"):
        export_video_dataset(out, "coco")
    # labeling again tracks it again
    report, failures = run(ColourEngine(), video_folder, out)
    assert (report.labeled, report.reused, failures) == (1, 1, [])
    export_video_dataset(out, "coco")


@pytest.mark.parametrize("fmt", ["mot", "coco"])
def test_frames_of_a_sequence_gone_from_the_dataset_are_pruned(video_folder, tmp_path, fmt):
    out = tmp_path / "ds"
    run(ColourEngine(), video_folder, out, fmt, frames=True)
    assert len(list((out / "sub__b" / "img1").glob("*.jpg"))) == 6
    mine = out / "mine" / "img1"  # a folder this writer did not make
    mine.mkdir(parents=True)
    (mine / "000001.jpg").write_bytes(b"x")
    (video_folder / "sub" / "b.avi").unlink()
    report, failures = run(ColourEngine(), video_folder, out, fmt, frames=True)
    assert failures == [] and report.total == 1
    assert not (out / "sub__b").exists()
    assert (out / "a" / "img1" / "000009.jpg").is_file() and (mine / "000001.jpg").is_file()
