"""``gs.track``: the engine grounds key frames, SAM 2.1 (tiny, random) propagates."""

from __future__ import annotations

import pytest

from grounded_sam.video.matching import mask_iou
from grounded_sam.video.synthetic import demo_video
from grounded_sam.video.types import TrackerSettings

from .standins import ColourGrounder


def test_gs_track_end_to_end(video_gs):
    video = demo_video(8)
    run = video_gs.track(video, "red box, blue disc", every=3)
    seen = []
    for index, dets in run:
        seen.append(index)
        assert dets.tracker_id is not None and len(dets.tracker_id) == len(dets)
        assert dets.mask.shape[1:] == video.size
        assert set(dets.data) >= {"class_name", "object_score", "grounded"}
        assert set(dets.data["class_name"]) <= {"red box", "blue disc"}
        assert dets.metadata["model_ids"]["propagator"] == video_gs.model_ids[0]
    assert seen == list(range(8))
    stats = run.stats
    assert stats.frames == 8 and stats.key_frames == 3  # frames 0, 3, 6
    assert stats.tracks_started >= 1  # threshold 0: the random engine finds regions
    assert stats.grounding_s > 0 and stats.propagating_s > 0
    # the propagator shares the engine's image encoder (same checkpoint)
    prop = run.tracker.propagator
    assert prop.model.vision_encoder is video_gs.predictor.model.vision_encoder


def test_real_propagator_with_a_grounder_that_knows_the_objects(video_gs):
    video = demo_video(10)
    phrases = ["red box", "blue disc", "green box"]
    conf = {"red box": 0.95, "blue disc": 0.9, "green box": 0.8}
    grounder = ColourGrounder(video, phrases, conf)
    run = video_gs.track(video, phrases, grounder=grounder, settings=TrackerSettings(every=4))
    results = dict(run)
    tracks = run.tracker.tracks
    assert [t.label for t in tracks.values()][:2] == ["red box", "blue disc"]
    assert tracks[1].first_frame == 0
    # frame 0: the tracks are the grounded masks (mask prompts: SAM 2 outputs them, at its
    # 64x64 low resolution upscaled back)
    gt = video.masks(0)
    for i in (0, 1):
        assert mask_iou(results[0].mask[i : i + 1], gt[i][None])[0, 0] > 0.8
    assert len(results) == 10


def test_bad_inputs_fail_before_work(video_gs, tiny_gs, tmp_path):
    video = demo_video(3)
    with pytest.raises(ValueError, match="every must be in"):
        video_gs.track(video, "red box", every=0)
    with pytest.raises(ValueError, match="every must be an integer"):
        video_gs.track(video, "red box", every=2.5)
    with pytest.raises(ValueError, match="max_frames"):
        video_gs.track(video, "red box", max_frames=0)
    with pytest.raises(ValueError, match="phrases only"):
        video_gs.track(video, "red box", points=[[5, 5]])
    with pytest.raises(FileNotFoundError):
        video_gs.track(tmp_path / "nope.mp4", "red box")
    with pytest.raises(ValueError, match="propagator="):
        tiny_gs.track(video, "red box")  # a SAM 1 engine needs a SAM 2.1 propagator


def test_max_frames_and_early_stop(video_gs):
    run = video_gs.track(demo_video(20), "red box", every=5, max_frames=4)
    assert [i for i, _ in run] == [0, 1, 2, 3]
    run = video_gs.track(demo_video(20), "red box", every=5)
    next(run)
    run.close()
    assert run.stats.frames == 1


def test_gs_track_with_sam3_uses_its_own_tracker(sam3_gs, sam3_video_dir):
    from grounded_sam.video.sam3_propagator import Sam3TrackerPropagator

    video = demo_video(7)
    run = sam3_gs.track(video, "red box, blue disc", every=3)
    results = dict(run)
    assert sorted(results) == list(range(7))
    assert run.propagator_id == str(sam3_video_dir)
    assert run.stats.key_frames == 3 and run.stats.tracks_started >= 1  # threshold 0
    for dets in results.values():
        assert dets.tracker_id is not None and dets.mask.shape[1:] == video.size
        assert set(dets.data["class_name"]) <= {"red box", "blue disc"}
    prop = run.tracker.propagator
    assert isinstance(prop, Sam3TrackerPropagator)  # no second checkpoint: SAM 3's tracker
    # the ViT backbone is held once (the grounder's), the tracker keeps its own neck
    assert prop.model.vision_encoder.backbone is sam3_gs.predictor.model.vision_encoder.backbone


def test_sam3_tracker_with_a_grounder_that_knows_the_objects(sam3_gs):
    video = demo_video(9)
    phrases = ["red box", "blue disc", "green box"]
    conf = {"red box": 0.95, "blue disc": 0.9, "green box": 0.8}
    grounder = ColourGrounder(video, phrases, conf)
    run = sam3_gs.track(video, phrases, grounder=grounder, settings=TrackerSettings(every=4))
    results = dict(run)
    tracks = run.tracker.tracks
    assert grounder.calls == 3  # frames 0, 4, 8
    assert [t.label for t in tracks.values()][:2] == ["red box", "blue disc"]
    assert tracks[1].first_frame == 0 and tracks[1].confidence == pytest.approx(0.95)
    # frame 0: the tracks are the grounded masks (mask prompts are SAM 3's output there, at
    # its 32x32 low resolution upscaled back)
    gt = video.masks(0)
    for i in (0, 1):
        assert mask_iou(results[0].mask[i : i + 1], gt[i][None])[0, 0] > 0.7
    assert len(results) == 9


def test_image_only_sam3_engine_is_refused_with_what_to_pass(tmp_path):
    from grounded_sam import GroundedSAM
    from grounded_sam.errors import ModelLoadError
    from tests.sam.sam3_models import tiny_sam3_folder

    gs = GroundedSAM.from_pretrained(sam=str(tiny_sam3_folder()), device="cpu", dtype="float32")
    with pytest.raises(ModelLoadError, match="image-only SAM 3 .*propagator='sam2.1_t'"):
        gs.track(demo_video(2), "red box")


def test_a_sam3_checkpoint_as_propagator_of_a_clip_engine(tiny_gs, sam3_video_dir):
    from grounded_sam.video.sam3_propagator import Sam3TrackerPropagator

    video = demo_video(4)
    grounder = ColourGrounder(video, ["red box"])
    run = tiny_gs.track(video, "red box", propagator=sam3_video_dir, grounder=grounder, every=2)
    results = dict(run)
    assert isinstance(run.tracker.propagator, Sam3TrackerPropagator)
    assert run.propagator_id == str(sam3_video_dir)
    assert all(len(d) == 1 and d.tracker_id.tolist() == [1] for d in results.values())
