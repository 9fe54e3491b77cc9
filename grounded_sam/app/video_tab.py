"""The page's Video tab: widgets and the Track event over :mod:`grounded_sam.app.video`.

Imports gradio (the ``app`` extra); :func:`grounded_sam.app.ui.build_app` calls
:func:`build_video_tab` inside its ``gr.Tab("Video")``. The event joins the page's engine
concurrency group, so a clip being tracked queues with the image tab's model requests (one at
a time by default, see :mod:`grounded_sam.app.server`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import gradio as gr

from grounded_sam.app.exports import default_folders
from grounded_sam.app.session import UserError
from grounded_sam.app.video import (
    DEFAULT_VIDEO_FRAMES,
    MAX_CLIP_FRAMES,
    MAX_VIDEO_FRAMES,
    MAX_VIDEO_SIDE,
    VideoTracking,
    track_clip,
)
from grounded_sam.video.types import TrackerSettings

if TYPE_CHECKING:
    from grounded_sam.app.session import Session

__all__ = ["build_video_tab", "video_help"]

#: Most frames between key frames the page offers.
MAX_EVERY_ON_PAGE = 60


def video_help(max_upload: str) -> str:
    """The tab's explanation of the knobs, the files and the limits."""
    d = TrackerSettings()
    return f"""
**How it works**: the phrases are grounded on frame 0 and every *key-frame interval* frames
(the image tab's index + query on that frame); SAM 2.1's video predictor (or SAM 3's
tracker) carries every
object's mask between key frames. A key-frame detection whose mask overlaps a track's by
IoU ≥ {d.match_iou:g} keeps that track's id; a new object gets a new id; a track ends after
{d.lost_after} frames in which the propagator sees its object as gone (the same defaults as
`grounded-sam track`, which also sets `--match-iou` and `--lost-after`).

**Files**: the annotated clip (H.264 mp4: masks, boxes and `label #id confidence`), the
JSON (per frame: track id, label, confidence, box xyxy in pixels, area, mask as COCO RLE,
the propagator's object score) and the MOTChallenge text (`frame,id,left,top,width,height,conf,...`,
frames 1-based).

**Uploads the browser cannot preview** (gradio then says *Video not playable*; OpenCV's
`mp4v`, for one) are still tracked: the server decodes them (OpenCV, else PyAV), and the
result is H.264, which browsers play.

**Limits**: uploads up to {max_upload.upper()}, frames up to {MAX_VIDEO_SIDE} px on the longer
side, clips up to {MAX_CLIP_FRAMES} frames, of which at most {MAX_VIDEO_FRAMES} are tracked
per request (*Max frames*; from the start of the clip). Requests are queued with the image
tab's and run one at a time. For whole videos use `grounded-sam track VIDEO --prompt ...`.
"""


def build_video_tab(
    tracking: VideoTracking,
    session: gr.State,
    *,
    engine: dict[str, Any],
    threshold: tuple[float, float],
    allowed: Callable[[str], bool],
    max_upload: str = "20mb",
) -> None:
    """Add the Video tab's widgets and its Track event to the Blocks being built.

    Args:
        tracking: The page's :class:`~grounded_sam.app.video.VideoTracking`.
        session: The page's per-tab ``gr.State`` (its export folder holds the files).
        engine: The engine events' concurrency settings (``concurrency_id`` / ``_limit``).
        threshold: ``(minimum, default)`` of the threshold slider.
        allowed: Whether a path is a file gradio's upload cache handed over.
        max_upload: The upload limit shown in the help.
    """
    why = tracking.unavailable()
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=320):
            clip = gr.Video(
                label="Clip (upload a short video)",
                sources=["upload"],
                include_audio=True,  # no ffmpeg pass over the upload: we only read frames
                height=300,
                elem_id="gs-video-input",
            )
            with gr.Row(equal_height=True):
                phrases = gr.Textbox(
                    label="Phrases (comma-separated)",
                    placeholder="person, car",
                    lines=1,
                    max_lines=1,
                    scale=4,
                    elem_id="gs-video-phrases",
                )
                run = gr.Button(
                    "Track", variant="primary", scale=1, min_width=90, elem_id="gs-video-run"
                )
            every = gr.Slider(
                1, MAX_EVERY_ON_PAGE, value=TrackerSettings().every, step=1,
                label="Key-frame interval (ground the phrases every N frames)",
                elem_id="gs-video-every",
            )  # fmt: skip
            max_frames = gr.Slider(
                1, MAX_VIDEO_FRAMES, value=DEFAULT_VIDEO_FRAMES, step=1,
                label="Max frames (tracked from the start of the clip)",
                elem_id="gs-video-max-frames",
            )  # fmt: skip
            low, default = threshold
            thresh = gr.Slider(
                low, 0.9, value=default, step=0.01,
                label="Detection threshold (minimum confidence on key frames)",
                elem_id="gs-video-threshold",
            )  # fmt: skip
            with gr.Accordion("How it works, files and limits", open=False):
                gr.Markdown(video_help(max_upload), elem_id="gs-video-help")
        with gr.Column(scale=3, min_width=400):
            result = gr.Video(
                label="Tracked clip",
                interactive=False,
                height=420,
                elem_id="gs-video-result",
            )
            status = gr.Markdown(
                f"⚠️ {why}" if why else "Upload a clip, type phrases and press *Track*.",
                elem_id="gs-video-status",
            )
            with gr.Row():
                dl_json = gr.DownloadButton(
                    "Tracks (JSON)", interactive=False, size="sm", elem_id="gs-video-dl-json"
                )
                dl_mot = gr.DownloadButton(
                    "Tracks (MOT text)", interactive=False, size="sm", elem_id="gs-video-dl-mot"
                )
                dl_mp4 = gr.DownloadButton(
                    "Annotated clip (mp4)", interactive=False, size="sm",
                    elem_id="gs-video-dl-mp4",
                )  # fmt: skip

    def on_track(
        path: Any,
        prompt: str,
        every_n: float,
        frames: float,
        min_conf: float,
        state: Session,
        progress: Any = gr.Progress(),  # noqa: B008
    ) -> tuple:
        if path is not None and not allowed(str(path)):
            # gradio only hands over files from its upload cache; never read others.
            raise gr.Error("Upload the clip through the page.")
        try:
            with state.lock:
                out = default_folders().folder_for(state) / "video"
            done = track_clip(
                tracking, path, prompt, every=every_n, max_frames=frames, threshold=min_conf,
                out_dir=out, on_progress=lambda f, desc: progress(f, desc=desc),
            )  # fmt: skip
        except UserError as exc:
            raise gr.Error(str(exc)) from None
        if done.tracks == 0:
            gr.Info("Nothing was found: try a lower threshold or another phrase.")
        return (
            str(done.video) if done.playable else None,
            done.status,
            gr.DownloadButton(value=str(done.json), interactive=True),
            gr.DownloadButton(value=str(done.mot), interactive=True),
            gr.DownloadButton(value=str(done.video), interactive=True),
        )

    inputs = [clip, phrases, every, max_frames, thresh, session]
    outputs = [result, status, dl_json, dl_mot, dl_mp4]
    run.click(on_track, inputs, outputs, show_progress_on=[result], **engine)
    phrases.submit(on_track, inputs, outputs, show_progress_on=[result], **engine)
