"""The Video tab: a clip tracked with the page's engine and SAM 2.1 (tiny, random), its files.

The engine grounds with the tiny SAM 2.1 video checkpoint (so the propagator is the engine's
own SAM, as ``grounded-sam app --sam sam2.1_t`` does) or with the tiny SAM 1 plus
``propagator=`` (``--propagator``). Clips are synthetic (:mod:`grounded_sam.video.synthetic`)
written as mp4 files, as a user uploads them.
"""

from __future__ import annotations

import json
from pathlib import Path

import gradio as gr
import numpy as np
import pytest

from grounded_sam.app import ui
from grounded_sam.app import video as app_video
from grounded_sam.app.session import Session, UserError
from grounded_sam.app.video import VideoTracking, track_clip
from grounded_sam.video.synthetic import demo_video


def _av():
    """PyAV (it comes with supervision; the tab writes H.264 with it), or skip."""
    return pytest.importorskip("av")


def _h264() -> None:
    """Skip without PyAV's libx264 (then the tab writes mp4v: tested below)."""
    if not app_video.h264_available():
        pytest.skip("PyAV with libx264 is not installed: the tab writes mp4v")


@pytest.fixture(scope="module")
def tracking(video_gs) -> VideoTracking:
    return VideoTracking(video_gs)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """A 12-frame synthetic clip (mp4v, as OpenCV writes it)."""
    return demo_video(12).write(tmp_path_factory.mktemp("clips") / "shapes.mp4")


def _decode(path: Path) -> tuple[str, str, list[np.ndarray]]:
    with _av().open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        return stream.codec_context.name, stream.codec_context.pix_fmt, frames


def test_track_clip_writes_a_browser_mp4_json_and_mot(tracking, clip, tmp_path) -> None:
    _h264()
    calls: list[tuple[float, str]] = []
    out = track_clip(
        tracking, clip, "red box, blue disc", every=4, max_frames=10, threshold=0.0,
        out_dir=tmp_path, on_progress=lambda f, d: calls.append((f, d)),
    )  # fmt: skip
    assert out.playable and out.frames == 10 and out.tracks >= 1
    # The clip is H.264 / yuv420p (what browsers play), one picture per tracked frame, drawn.
    codec, pix_fmt, frames = _decode(out.video)
    assert (codec, pix_fmt) == ("h264", "yuv420p") and len(frames) == 10
    assert frames[0].shape == (120, 160, 3)
    plain = demo_video(12).frame(0).astype(int)
    assert np.abs(frames[0].astype(int) - plain).mean() > 2  # masks / boxes drawn on it
    # The JSON: the CLI's schema, the upload's name (never a server path), every frame.
    doc = json.loads(out.json.read_text())
    assert doc["video"] == "shapes.mp4" and doc["phrases"] == ["red box", "blue disc"]
    assert doc["num_frames"] == 10 and [f["frame"] for f in doc["frames"]] == list(range(10))
    assert doc["settings"]["every"] == 4 and doc["models"]["propagator"]
    assert doc["stats"]["key_frames"] == 3  # frames 0, 4, 8
    first = doc["frames"][0]["instances"][0]
    assert {"track_id", "label", "confidence", "box", "mask", "object_score"} <= set(first)
    # MOT: frame,id,left,top,width,height,conf,-1,-1,-1 with 1-based frames.
    rows = [line.split(",") for line in out.mot.read_text().splitlines()]
    assert rows and all(len(r) == 10 for r in rows)
    assert {int(r[0]) for r in rows} <= set(range(1, 11)) and int(rows[0][0]) == 1
    n_instances = sum(f["num_instances"] for f in doc["frames"])
    assert len(rows) == n_instances
    # Progress: increasing, ending at 1; the status says the clip was cut at Max frames.
    fractions = [f for f, _ in calls]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert calls[-1][1] == "Tracking: frame 10 of 10"
    assert "10 frames" in out.status and "The clip has 12 frames: the first 10" in out.status
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "shapes.json", "shapes.mot.txt", "shapes_tracked.mp4"
    ]  # fmt: skip


def test_files_follow_the_objects_of_an_oracle_clip(video_gs, tmp_path, monkeypatch) -> None:
    """A grounder and a propagator that know the shapes: the app's files must match them."""
    from grounded_sam.utils.masks import decode_rle
    from grounded_sam.video import api
    from grounded_sam.video.matching import mask_iou
    from tests.video.standins import ColourGrounder, ColourPropagator

    video = demo_video(12)  # green box enters on frame 4; the blue disc leaves after frame 8
    frames = video.write(tmp_path / "oracle")  # PNG frames: exact colours for the stand-ins
    phrases = ["red box", "blue disc", "green box"]
    monkeypatch.setattr(
        api, "engine_grounder", lambda gs, words, opts: ColourGrounder(video, words)
    )
    tracking = VideoTracking(video_gs, ColourPropagator())
    out = track_clip(tracking, frames, ", ".join(phrases), every=2, max_frames=12,
                     out_dir=tmp_path / "out")  # fmt: skip
    doc = json.loads(out.json.read_text())
    assert [(t["track_id"], t["label"], t["first_frame"]) for t in doc["tracks"]] == [
        (1, "red box", 0), (2, "blue disc", 0), (3, "green box", 4)
    ]  # fmt: skip
    label_of = {obj.label: i for i, obj in enumerate(video.objects)}
    mot = {}
    for line in out.mot.read_text().splitlines():
        f, tid, *_ = line.split(",")
        mot.setdefault(int(f) - 1, set()).add(int(tid))
    for entry in doc["frames"]:
        t, truth = entry["frame"], video.masks(entry["frame"])
        assert {i["label"] for i in entry["instances"]} == {video.objects[k].label for k in truth}
        for inst in entry["instances"]:
            gt = truth[label_of[inst["label"]]]
            iou = mask_iou(decode_rle(inst["mask"])[None], gt[None])[0, 0]
            assert iou > 0.99, (t, inst["label"], iou)
        assert mot[t] == {i["track_id"] for i in entry["instances"]}
    assert "3 tracks (red box: 1, blue disc: 1, green box: 1)" in out.status


def test_propagator_is_loaded_once_and_shares_the_engine_encoder(
    tracking, video_gs, clip, tmp_path
) -> None:
    track_clip(tracking, clip, "red box", every=5, max_frames=3, out_dir=tmp_path / "a")
    prop = tracking._prop
    assert prop is not None and prop.model.vision_encoder is video_gs.predictor.model.vision_encoder
    again = track_clip(tracking, clip, "blue disc", every=5, max_frames=2, out_dir=tmp_path / "a")
    assert tracking._prop is prop and again.frames == 2
    # the earlier clip's files are replaced, not accumulated
    assert len(list((tmp_path / "a").iterdir())) == 3


def test_sam1_engine_with_a_propagator(tiny_gs, video_sam_dir, clip, tmp_path) -> None:
    _h264()
    tracking = VideoTracking(tiny_gs, str(video_sam_dir))  # grounded-sam app --propagator DIR
    assert tracking.unavailable() is None
    out = track_clip(tracking, clip, "red box", every=2, max_frames=4, out_dir=tmp_path)
    codec, _, frames = _decode(out.video)
    assert codec == "h264" and len(frames) == 4
    assert json.loads(out.json.read_text())["models"]["propagator"] == str(video_sam_dir)


def test_a_sam3_engine_tracks_with_its_own_tracker(clip, tmp_path) -> None:
    """SAM 3 propagates with its own tracker (transformers >= 5.24, as the video tests)."""
    from grounded_sam import GroundedSAM
    from grounded_sam.video import sam3_tiny as tiny3
    from tests.video.conftest import require_sam3_video

    require_sam3_video()

    ckpt = tiny3.save_tiny_sam3_video(tmp_path / "sam3")
    gs = GroundedSAM.from_pretrained(sam=str(ckpt), device="cpu", threshold=0.0, top_k=2)
    tracking = VideoTracking(gs)
    assert tracking.unavailable() is None
    out = track_clip(tracking, clip, "red box", every=2, max_frames=4, out_dir=tmp_path / "o")
    assert out.frames == 4 and type(tracking._prop).__name__ == "Sam3TrackerPropagator"
    assert json.loads(out.json.read_text())["models"]["clip"] is None  # SAM 3 grounds text


def test_browser_writer_pads_odd_sides_and_writes_atomically(tmp_path) -> None:
    _h264()
    video = demo_video(5, size=(61, 83))
    target = tmp_path / "odd.mp4"
    target.write_bytes(b"an earlier file")
    writer = app_video.BrowserVideoWriter(target, (61, 83), 7.5)
    for _, frame in video:
        writer.write(np.ascontiguousarray(frame[..., ::-1]))
    assert target.read_bytes() == b"an earlier file"  # not replaced before close
    assert writer.close() == target
    codec, pix_fmt, frames = _decode(target)
    assert (codec, pix_fmt, len(frames)) == ("h264", "yuv420p", 5)
    assert frames[2].shape == (62, 84, 3)  # the odd last row / column repeated
    assert np.abs(frames[2][:61, :83].astype(int) - video.frame(2)).mean() < 6  # lossy, close
    with _av().open(str(target)) as container:
        assert float(container.streams.video[0].average_rate) == 7.5
    aborted = app_video.BrowserVideoWriter(tmp_path / "gone.mp4", (60, 80), 10)
    aborted.write(np.zeros((60, 80, 3), np.uint8))
    aborted.abort()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["odd.mp4"]


def test_an_engine_that_cannot_propagate_says_how_to_start_the_app(tiny_gs, clip, tmp_path):
    tracking = VideoTracking(tiny_gs)  # SAM 1, no --propagator
    why = tracking.unavailable()
    assert why and "--propagator sam2.1_t" in why and "--sam sam2.1_t" in why
    with pytest.raises(UserError, match="--propagator sam2.1_t"):
        track_clip(tracking, clip, "red box", out_dir=tmp_path)
    # A propagator that does not load is a message too (the tiny SAM 1 is not SAM 2.1).
    sam1 = VideoTracking(tiny_gs, tiny_gs.model_ids[0])
    with pytest.raises(UserError, match="needs SAM 2 / 2.1.*--propagator"):
        track_clip(sam1, clip, "red box", max_frames=2, out_dir=tmp_path)
    assert not any(tmp_path.iterdir())


def test_a_second_clip_while_one_is_tracked_is_a_message(tracking, clip, tmp_path):
    assert tracking._lock.acquire(blocking=False)  # as if another Track were running
    try:
        with pytest.raises(UserError, match="Another clip is being tracked"):
            track_clip(tracking, clip, "red box", out_dir=tmp_path / "out")
    finally:
        tracking._lock.release()
    assert tracking._lock.acquire(blocking=False)  # the refusal did not keep the lock
    tracking._lock.release()


def test_bad_clips_and_knobs_are_one_line_messages(tracking, clip, tmp_path, monkeypatch):
    out = tmp_path / "out"

    def refused(path, prompt="red box", **knobs) -> str:
        with pytest.raises(UserError) as info:
            track_clip(tracking, path, prompt, out_dir=out, **knobs)
        message = str(info.value)
        assert "\n" not in message and str(tmp_path) not in message, message
        return message

    assert refused(None) == app_video.NO_VIDEO
    garbage = tmp_path / "notes.mp4"
    garbage.write_bytes(b"definitely not a video" * 50)
    assert refused(garbage).startswith("Could not read 'notes.mp4' as a video")
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    assert "Could not read 'empty.mp4' as a video" in refused(empty)
    import cv2

    for name, fourcc in (("no_frames.avi", "MJPG"), ("no_frames.mkv", "MJPG")):
        empty_clip = tmp_path / name  # a container with a video stream and no frame in it
        cv2.VideoWriter(str(empty_clip), cv2.VideoWriter_fourcc(*fourcc), 10, (64, 48)).release()
        assert empty_clip.stat().st_size > 0
        message = refused(empty_clip)
        assert message.startswith(f"'{name}' has no frames that can be decoded"), message
    text = tmp_path / "frames.txt"
    text.write_text("1,2,3\n")
    assert "Upload an mp4" in refused(text)
    assert refused(clip, " , ").startswith("Type at least one phrase")
    assert "Key-frame interval must be a whole number from 1 to 1000" in refused(clip, every=0)
    assert "Max frames must be a whole number from 1 to 300" in refused(clip, max_frames=301)
    assert "Max frames" in refused(clip, max_frames="many")
    assert "threshold" in refused(clip, threshold=1.5)
    # too large and too long (the bounds lowered for the test)
    monkeypatch.setattr(app_video, "MAX_VIDEO_SIDE", 100)
    assert "the limit is 100 px on the longer side" in refused(clip)
    monkeypatch.setattr(app_video, "MAX_VIDEO_SIDE", 1920)
    monkeypatch.setattr(app_video, "MAX_CLIP_FRAMES", 10)
    assert "has 12 frames; the app takes clips of up to 10 frames" in refused(clip)
    assert not out.exists() or not any(out.iterdir())


class _FailsOnFrame:
    """A propagator that breaks mid-clip (a frame that cannot be decoded, say)."""

    def __init__(self, inner, frame: int) -> None:
        self.inner, self.frame = inner, frame

    def reset(self):
        self.inner.reset()

    def step(self, index, frame):
        if index == self.frame:
            raise ValueError(f"frame {index} cannot be decoded")
        return self.inner.step(index, frame)

    def add(self, *args, **kwargs):
        return self.inner.add(*args, **kwargs)

    def remove(self, track_ids):
        self.inner.remove(track_ids)


def test_a_failure_mid_clip_leaves_no_file(video_gs, tracking, clip, tmp_path) -> None:
    out = tmp_path / "out"
    track_clip(tracking, clip, "red box", every=5, max_frames=2, out_dir=out)  # earlier files
    before = sorted((p.name, p.stat().st_mtime_ns) for p in out.iterdir())
    broken = VideoTracking(video_gs, _FailsOnFrame(tracking._propagator(None), 3))
    with pytest.raises(UserError, match="^shapes.mp4: frame 3 cannot be decoded$"):
        track_clip(broken, clip, "red box", every=5, max_frames=6, out_dir=out)
    assert sorted((p.name, p.stat().st_mtime_ns) for p in out.iterdir()) == before


def test_without_h264_the_clip_is_mp4v_for_download(tracking, clip, tmp_path, monkeypatch):
    monkeypatch.setattr(app_video, "h264_available", lambda: False)
    out = track_clip(tracking, clip, "red box", every=5, max_frames=3, out_dir=tmp_path)
    assert not out.playable and "browsers do not play: download it" in out.status
    codec, _, frames = _decode(out.video)
    assert codec == "mpeg4" and len(frames) == 3


# -- the page ----------------------------------------------------------------------------------


def test_the_logic_module_imports_no_gradio() -> None:
    import ast

    tree = ast.parse(Path(app_video.__file__).read_text())
    for node in tree.body:
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        assert not any(n.split(".")[0] == "gradio" for n in names), names


def _blocks(demo: gr.Blocks) -> dict[str, object]:
    return {b.elem_id: b for b in demo.blocks.values() if getattr(b, "elem_id", None)}


def _handler(demo: gr.Blocks, name: str):
    fns = [f for f in demo.fns.values() if getattr(f.fn, "__name__", "") == name]
    assert fns, name
    return fns


def test_page_has_a_video_tab_in_the_engine_queue(video_gs, tiny_gs) -> None:
    demo = ui.build_app(video_gs)
    blocks = _blocks(demo)
    for elem_id in (
        "gs-tab-image", "gs-tab-video", "gs-video-input", "gs-video-phrases", "gs-video-run",
        "gs-video-every", "gs-video-max-frames", "gs-video-threshold", "gs-video-result",
        "gs-video-status", "gs-video-dl-json", "gs-video-dl-mot", "gs-video-dl-mp4",
        "gs-input", "gs-phrases",
    ):  # fmt: skip
        assert elem_id in blocks, elem_id
    assert blocks["gs-video-max-frames"].maximum == app_video.MAX_VIDEO_FRAMES
    assert blocks["gs-video-every"].value == 10
    assert blocks["gs-video-result"].interactive is False
    assert "Upload a clip" in blocks["gs-video-status"].value
    # The Track event queues with the image tab's model requests (one at a time).
    tracks = _handler(demo, "on_track")
    assert tracks and {f.concurrency_id for f in tracks} == {ui.ENGINE}
    assert {f.concurrency_limit for f in tracks} == {1}
    # A SAM 1 page without --propagator says so in the tab before anything is clicked.
    status = _blocks(ui.build_app(tiny_gs))["gs-video-status"].value
    assert status.startswith("⚠️") and "--propagator sam2.1_t" in status


@pytest.mark.filterwarnings("ignore:.*:UserWarning")  # gr.Info outside a request
def test_track_handler(video_gs, clip, tmp_path, monkeypatch) -> None:
    import shutil

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    demo = ui.build_app(video_gs)
    on_track = _handler(demo, "on_track")[0].fn
    session = Session()
    try:
        # A server path that did not come through gradio's upload cache is refused.
        with pytest.raises(gr.Error, match="Upload the clip through the page"):
            on_track(str(clip), "red box", 5, 3, 0.0, session, progress=lambda *a, **k: None)
        upload = tmp_path / "gradio" / "abc123" / clip.name
        upload.parent.mkdir(parents=True)
        shutil.copy(clip, upload)
        with pytest.raises(gr.Error, match="Type at least one phrase"):
            on_track(str(upload), "", 5, 3, 0.0, session, progress=lambda *a, **k: None)
        seen = []
        video, status, dl_json, dl_mot, dl_mp4 = on_track(
            str(upload), "red box", 5.0, 3.0, 0.0, session,
            progress=lambda f, desc: seen.append((f, desc)),
        )  # fmt: skip
        if app_video.h264_available():
            assert Path(video).suffix == ".mp4" and Path(video).is_file()
            assert Path(video).parent == session.workdir / "video"  # the tab's own folder
        else:
            assert video is None  # mp4v: offered for download only
        assert "Tracked **shapes.mp4**: 3 frames" in status
        paths = [Path(b.value["path"] if isinstance(b.value, dict) else b.value)
                 for b in (dl_json, dl_mot, dl_mp4)]  # fmt: skip
        assert all(b.interactive for b in (dl_json, dl_mot, dl_mp4))
        assert [p.name for p in paths] == ["shapes.json", "shapes.mot.txt", "shapes_tracked.mp4"]
        assert all(p.is_file() for p in paths)  # gradio's cached copies
        assert seen[-1] == (1.0, "Tracking: frame 3 of 3")
    finally:
        session.close()


def test_cli_propagator_reaches_the_page(tiny_gs, monkeypatch) -> None:
    from grounded_sam.app import server
    from grounded_sam.cli import app as cli_app
    from grounded_sam.cli.main import build_parser

    built = {}
    real = ui.build_app
    monkeypatch.setattr(cli_app, "load_engine", lambda args: tiny_gs)
    monkeypatch.setattr(ui, "build_app", lambda gs, **kw: built.update(kw) or real(gs, **kw))
    monkeypatch.setattr(gr.Blocks, "launch", lambda self, **kw: None)
    args = build_parser().parse_args(["app", "--propagator", "sam2.1_s"])
    assert args.run(args) == 0 and built["propagator"] == "sam2.1_s"
    status = _blocks(real(tiny_gs, propagator="sam2.1_s"))["gs-video-status"].value
    assert not status.startswith("⚠️")
    server.serve(tiny_gs, block=False)
    assert built["propagator"] is None
