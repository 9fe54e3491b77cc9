"""The gradio page: widgets and event wiring over :mod:`grounded_sam.app.callbacks`.

Importing this module imports gradio (the ``app`` extra). Use :func:`build_app` to get the
``gr.Blocks`` (e.g. to mount it in another app) or :func:`grounded_sam.app.server.launch` to
serve it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gradio as gr

from grounded_sam import limits
from grounded_sam.app import callbacks as cb
from grounded_sam.app.video import VideoTracking
from grounded_sam.app.video_tab import build_video_tab
from grounded_sam.grounding.store import DEFAULT_MAX_BYTES, IndexStore

if TYPE_CHECKING:
    from grounded_sam.pipeline import GroundedSAM

__all__ = ["build_app", "example_images", "help_markdown"]

logger = logging.getLogger(__name__)

EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"
_SKIP = object()  # "leave this output as it is"
ENGINE = "engine"  # concurrency group of every event that runs a model
RENDER = "render"  # concurrency group of overlay redraws and export writing


def example_images() -> list[Path]:
    """The bundled example images (see ``examples/README.txt`` for their origin)."""
    return sorted(p for p in EXAMPLES_DIR.glob("*.jpg") if p.is_file())


class _UnreadableUpload:
    """What the image input hands the callback when gradio could not open the upload."""

    def __init__(self, name: str, too_large: bool = False) -> None:
        self.name = name
        self.too_large = too_large

    def message(self) -> str:
        if self.too_large:
            return (
                f"'{self.name}' has too many pixels to decode safely (a decompression bomb, or "
                "a huge image): downscale it and upload it again."
            )
        return (
            f"Could not read '{self.name}' as an image. Upload a JPEG, PNG, WebP, BMP, GIF or "
            "TIFF file."
        )


def _friendly_upload_errors(image: gr.Image) -> gr.Image:
    """Let an upload that PIL cannot open reach the callback as :class:`_UnreadableUpload`.

    gradio opens an upload with PIL (in ``preprocess``) before the callback runs; a file that
    is not an image would otherwise end the event with a bare "Error" and leave the tab's
    previous image in place. The component's ``preprocess`` is wrapped on the instance (a
    ``gr.Image`` subclass would make gradio write a ``.pyi`` stub next to this file).
    """
    original = image.preprocess

    def preprocess(payload: Any) -> Any:
        try:
            return original(payload)
        except Exception as exc:  # noqa: BLE001  (PIL raises many types for bad files)
            name = Path(getattr(payload, "orig_name", None) or "the upload").name
            return _UnreadableUpload(name, too_large=_is_bomb(exc))

    image.preprocess = preprocess  # type: ignore[method-assign]
    return image


def _is_bomb(exc: BaseException | None) -> bool:
    """True when ``exc`` (or an exception it was raised from) is PIL's decompression bomb."""
    from PIL import Image

    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, Image.DecompressionBombError):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def _friendly_numbers(slider: gr.Slider, label: str) -> gr.Slider:
    """Make a slider answer a value that is not a number (API clients) with a real message.

    gradio's own check compares the value with the bounds and fails with a bare "Error" when
    it is not a number; out-of-range numbers already get gradio's message.
    """
    original = slider.preprocess
    low, high = slider.minimum, slider.maximum

    def preprocess(payload: Any) -> Any:
        if isinstance(payload, bool) or not isinstance(payload, (int, float)) or payload != payload:
            raise gr.Error(f"{label} must be a number from {low:g} to {high:g}, got {payload!r}.")
        return original(payload)

    slider.preprocess = preprocess  # type: ignore[method-assign]
    return slider


def help_markdown(max_side: int = cb.MAX_IMAGE_SIDE, max_upload: str = cb.MAX_UPLOAD_SIZE) -> str:
    """The page's explanation of the settings, click modes, exports and limits."""
    levels = "\n".join(
        f"| {name} | {lv.refine} | "
        + (
            f"{lv.min_region_fraction * 100:g}% of the image |"
            if lv.min_region_fraction
            else "off |"
        )
        for name, lv in cb.REFINEMENT_LEVELS.items()
    )
    return f"""
**Phrases**: one or several, comma-separated (`date, fig, hazelnut`); press Enter or
*Segment*. The image is indexed once when it is loaded (SAM image encoder, grid proposals,
CLIP region embeddings); every phrase after that is answered from the index.

**Threshold**: minimum *confidence* of a region, the calibrated CLIP probability that the
region shows the phrase (softmax over your phrases plus a few background phrases).
**Top-K**: at most this many regions per phrase.

**Refinement level**: how the final masks are made from the chosen regions. Each region's
box is given to SAM; each refinement pass feeds the mask's own low-res logits back with the
box, which tightens edges (`refine`). Islands and holes smaller than a fraction of the
image are then removed (`min_region_area`).

| level | refinement passes | islands / holes removed below |
|---|---|---|
{levels}

**Clicking the result**: *Inspect region* shows the label, confidence, CLIP score and SAM
IoU of the region under the click. *Foreground point* / *Background point* add SAM point
prompts; *Box corners* takes two clicks (opposite corners) as a SAM box prompt. Prompts
segment with SAM directly on the cached image embedding; *Clear prompts* starts over.
*Find similar* also takes two corners around an example object, then shows every region
that looks like it ("more like this": CLIP image similarity to the boxed region; threshold,
top-K and negative phrases apply).

**Negative phrases** (e.g. `handle, saucer`): a region that matches one of them better
than your phrases is never shown.

**Exports**: a ZIP with one binary PNG mask per region (255 inside), the overlay PNG as
shown, and the JSON (same schema as `grounded-sam` on the command line: label, confidence,
CLIP score, SAM IoU, box, area and the mask as COCO RLE per region).

**Limits**: uploads up to {max_upload.upper()}, images up to {max_side} px on the longer
side, at most {limits.MAX_PHRASES} phrases of at most {limits.MAX_PHRASE_CHARS} characters per
query. Each browser tab has its own image and results; requests are queued and run one at a
time. Every request's work is bounded whatever the upload: a fixed number of candidate
regions per image, CLIP crops that cost the same for any region size (a {max_side}×300
panorama indexes about as fast as a photo), and a query answers from the index without
re-running the image models.
"""


#: The indexing stages, in order, as named by GroundedSAM.index's progress.
INDEX_STAGES = ("SAM encoder", "proposals", "CLIP regions")


def index_progress(progress: Callable[..., Any]) -> Callable[[str], None]:
    """Drive gradio's progress indicator from the indexing stages (shown on the result)."""

    def on_stage(name: str) -> None:
        done = INDEX_STAGES.index(name) if name in INDEX_STAGES else 0
        progress(done / len(INDEX_STAGES), desc=f"Indexing the image: {name}")

    return on_stage


def build_app(
    gs: GroundedSAM,
    *,
    max_image_side: int = cb.MAX_IMAGE_SIDE,
    max_upload: str = cb.MAX_UPLOAD_SIZE,
    concurrency_limit: int = 1,
    title: str = "grounded_sam",
    max_index_bytes: int = DEFAULT_MAX_BYTES,
    index_store: IndexStore | None = None,
    propagator: Any = None,
) -> gr.Blocks:
    """Build the page for an engine.

    The page's tabs share one :class:`~grounded_sam.grounding.store.IndexStore`: each tab
    holds the key of its image's index, the store holds the indexes (bounded by bytes), so a
    picture opened in several tabs is indexed once.

    Args:
        gs: The loaded engine, shared by all tabs.
        max_image_side: Largest accepted image side in pixels.
        max_upload: Upload size limit shown on the page (enforce it with
            ``launch(max_file_size=...)``).
        concurrency_limit: How many engine requests run at once (others wait in the queue).
        title: Browser tab title.
        max_index_bytes: Bound of the page's index store in bytes (2 GiB by default; least
            recently used indexes are dropped beyond it and built again when needed).
        index_store: A store to use instead (e.g. one a server shares with the page);
            ``max_index_bytes`` is then ignored.
        propagator: The Video tab's SAM 2.1 or SAM 3 checkpoint (``--propagator``; None: the
            engine's SAM, which must then be SAM 2.1 or SAM 3, else the tab says how to start
            the app); see
            :class:`~grounded_sam.app.video.VideoTracking`.

    Returns:
        The ``gr.Blocks``; call ``.queue().launch(...)`` or use
        :func:`grounded_sam.app.server.launch`.
    """
    store = index_store if index_store is not None else IndexStore(max_index_bytes)
    tracking = VideoTracking(gs, propagator)
    threshold_default = float(gs.threshold)
    threshold_min = min(0.1, threshold_default)
    top_k_default = int(gs.top_k) if gs.top_k is not None else 20

    # -- callbacks (thin: all logic is in grounded_sam.app.callbacks) -------------------------
    # Every event that can change the result updates the same outputs, in this order:
    # session, result image, index line, status line, region line, table, 3 download buttons.
    # The download buttons are disabled with each new result and re-enabled by on_exports
    # (chained with .then) once that result's files exist, so nobody downloads stale files.

    def page(
        session: cb.Session,
        *,
        image: Any = _SKIP,
        index_info: Any = _SKIP,
        status: Any = _SKIP,
        region: Any = _SKIP,
        table: Any = _SKIP,
        new_result: bool = False,
    ) -> tuple:
        def keep(value: Any) -> Any:
            return gr.skip() if value is _SKIP else value

        downloads = (
            [gr.DownloadButton(value=None, interactive=False) for _ in range(3)]
            if new_result
            else [gr.skip() for _ in range(3)]
        )
        return (
            session,
            keep(image),
            keep(index_info),
            keep(status),
            keep(region),
            keep(table),
            *downloads,
        )

    def problem(session: cb.Session, exc: cb.UserError) -> tuple:
        gr.Warning(str(exc))
        return page(session, status=f"⚠️ {exc}")

    def on_image(
        path: Any, opacity: float, session: cb.Session, progress: Any = gr.Progress()  # noqa: B008
    ) -> tuple:
        if path is None:
            upload = None
        elif isinstance(path, _UnreadableUpload):
            upload = f"unreadable:{path.name}"
        else:
            upload = f"file:{path}"
        if upload is not None and upload == session.upload:
            return page(session)  # the same upload reported again: nothing to do
        session.upload = upload
        if path is None:
            cb.clear_image(session)
            status = "Upload an image or pick an example."
        else:
            try:
                if isinstance(path, _UnreadableUpload):
                    raise cb.UserError(path.message())
                if not _in_upload_folder(path):
                    # gradio only hands over files from its upload cache; never read others.
                    raise cb.UserError("Upload the image through the page.")
                cb.set_image(
                    session, gs, path, max_side=max_image_side, on_stage=index_progress(progress)
                )
                status = (
                    "Image indexed: type phrases and press Enter, or click the image to prompt SAM."
                )
            except cb.UserError as exc:
                cb.clear_image(session)
                gr.Warning(str(exc))
                status = f"⚠️ {exc}"
        return page(
            session,
            image=cb.render(session, opacity),
            index_info=cb.index_markdown(session),
            status=status,
            region="",
            table=[],
            new_result=True,
        )

    def on_query(
        prompt: str,
        threshold: float,
        level: str,
        top_k: float,
        opacity: float,
        session: cb.Session,
        negative: str = "",
    ) -> tuple:
        try:
            status = cb.text_query(session, gs, prompt, threshold, level, top_k, negative)
        except cb.UserError as exc:
            return problem(session, exc)
        if session.result is not None and len(session.result.dets) == 0:
            gr.Info("No region matched: try a lower threshold or another phrase.")
        return page(
            session,
            image=cb.render(session, opacity),
            status=status,
            region="",
            table=cb.region_table(session),
            new_result=True,
        )

    def on_settings(
        prompt: str,
        threshold: float,
        level: str,
        top_k: float,
        opacity: float,
        session: cb.Session,
        negative: str = "",
    ) -> tuple:
        # Re-answer the current phrases when a setting changes; quietly do nothing before
        # there is an image and a phrase, or while a SAM point/box result is shown.
        result = session.result
        if session.index is None or not (prompt or "").strip():
            return page(session)
        if result is not None and result.kind == "prompt":
            return page(session)
        return on_query(prompt, threshold, level, top_k, opacity, session, negative)

    def on_click(
        mode: str,
        opacity: float,
        session: cb.Session,
        threshold: float,
        top_k: float,
        negative: str,
        evt: gr.SelectData,
    ) -> tuple:
        index = evt.index if isinstance(evt.index, (list, tuple)) else None
        if index is None or len(index) != 2:
            return page(session)
        x, y = float(index[0]), float(index[1])
        try:
            message, changed = cb.click(
                session, gs, x, y, mode, threshold=threshold, top_k=top_k, negative=negative
            )
        except cb.UserError as exc:
            return problem(session, exc)
        if not changed:
            return page(session, region=message)
        return page(
            session,
            image=cb.render(session, opacity),
            status=message,
            region="",
            table=cb.region_table(session),
            new_result=True,
        )

    def on_clear_prompts(opacity: float, session: cb.Session) -> tuple:
        message = cb.clear_prompts(session)
        return page(
            session,
            image=cb.render(session, opacity),
            status=message,
            region="",
            table=cb.region_table(session),
            new_result=True,
        )

    def on_opacity(opacity: float, session: cb.Session) -> tuple:
        image = cb.render(session, opacity)
        if image is None:
            return page(session)
        return page(session, image=image, new_result=session.result is not None)

    def on_row(session: cb.Session, evt: gr.SelectData) -> str:
        index = evt.index if isinstance(evt.index, (list, tuple)) else [evt.index]
        return cb.describe_row(session, int(index[0]))

    def on_exports(opacity: float, session: cb.Session) -> tuple:
        files = cb.export_files(session, gs, opacity)
        if files is None:
            return tuple(gr.DownloadButton(value=None, interactive=False) for _ in range(3))
        return (
            gr.DownloadButton(value=str(files.masks_zip), interactive=True),
            gr.DownloadButton(value=str(files.overlay_png), interactive=True),
            gr.DownloadButton(value=str(files.json), interactive=True),
        )

    # -- layout ---------------------------------------------------------------------------

    with gr.Blocks(title=title, analytics_enabled=False, delete_cache=(3600, 7200)) as demo:
        # gr.State deep-copies this template per tab; the copies share `store`.
        session = gr.State(cb.Session(store=store), delete_callback=_close_session)
        gr.Markdown("## grounded_sam: type a phrase, get masks", elem_id="gs-title")
        gr.Markdown(cb.models_markdown(gs), elem_id="gs-models")
        with gr.Tab("Image", id="image", elem_id="gs-tab-image"):
            with gr.Row(equal_height=False):
                with gr.Column(scale=2, min_width=320):
                    source = _friendly_upload_errors(
                        gr.Image(
                            label="Image (upload or pick an example)",
                            type="filepath",
                            image_mode=None,
                            sources=["upload", "clipboard"],
                            height=300,
                            elem_id="gs-input",
                        )
                    )
                    examples = example_images()
                    if examples:
                        gr.Examples(
                            examples=[[str(p)] for p in examples],
                            inputs=[source],
                            label="Examples (fruits: try 'date, fig, hazelnut')",
                            elem_id="gs-examples",
                        )
                    index_info = gr.Markdown(
                        cb.index_markdown(cb.Session()), elem_id="gs-index-info"
                    )
                    with gr.Row(equal_height=True):
                        phrases = gr.Textbox(
                            label="Phrases (comma-separated)",
                            placeholder="date, fig, hazelnut",
                            lines=1,
                            max_lines=1,
                            scale=4,
                            elem_id="gs-phrases",
                        )
                        run = gr.Button(
                            "Segment", variant="primary", scale=1, min_width=90, elem_id="gs-run"
                        )
                    negative = gr.Textbox(
                        label="Negative phrases (never shown)",
                        placeholder="handle, saucer",
                        lines=1,
                        max_lines=1,
                        elem_id="gs-negative",
                    )
                    threshold = gr.Slider(
                        threshold_min,
                        0.9,
                        value=threshold_default,
                        step=0.01,
                        label="Detection threshold (minimum confidence)",
                        elem_id="gs-threshold",
                    )
                    _friendly_numbers(threshold, "The threshold")
                    with gr.Row():
                        level = gr.Radio(
                            list(cb.REFINEMENT_LEVELS),
                            value="medium",
                            label="Mask refinement",
                            info=" · ".join(
                                f"{k}: {v.description}" for k, v in cb.REFINEMENT_LEVELS.items()
                            ),
                            elem_id="gs-refinement",
                        )
                        top_k = gr.Slider(
                            1,
                            100,
                            value=top_k_default,
                            step=1,
                            label="Top-K regions per phrase",
                            elem_id="gs-topk",
                        )
                        _friendly_numbers(top_k, "Top-K")
                    with gr.Group():
                        mode = gr.Radio(
                            list(cb.CLICK_MODES),
                            value=cb.CLICK_MODES[0],
                            label="Clicking the result image",
                            elem_id="gs-click-mode",
                        )
                        clear = gr.Button("Clear prompts", size="sm", elem_id="gs-clear-prompts")
                    with gr.Accordion("How it works, settings and limits", open=False):
                        gr.Markdown(help_markdown(max_image_side, max_upload), elem_id="gs-help")
                with gr.Column(scale=3, min_width=400):
                    gr.Markdown(
                        "**Result**: click a region to inspect it, or pick another click mode to "
                        "prompt SAM with points or a box.",
                        elem_id="gs-result-help",
                    )
                    result = gr.Image(
                        label="Result",
                        show_label=False,  # the label chip would hide the top-left region label
                        type="numpy",
                        format="png",
                        interactive=False,
                        buttons=["download", "fullscreen"],
                        height=480,
                        elem_id="gs-result",
                    )
                    opacity = gr.Slider(
                        0.0, 1.0, value=0.5, step=0.05, label="Mask opacity", elem_id="gs-opacity"
                    )
                    status = gr.Markdown("Upload an image or pick an example.", elem_id="gs-status")
                    region_info = gr.Markdown("", elem_id="gs-region-info")
                    table = gr.Dataframe(
                        headers=cb.TABLE_HEADERS,
                        datatype=["number", "str", "number", "number", "number", "str", "number"],
                        value=[],
                        interactive=False,
                        label="Regions",
                        max_height=320,
                        elem_id="gs-regions",
                    )
                    with gr.Row():
                        dl_zip = gr.DownloadButton(
                            "Masks (ZIP of PNGs)", interactive=False, size="sm", elem_id="gs-dl-zip"
                        )
                        dl_png = gr.DownloadButton(
                            "Overlay (PNG)", interactive=False, size="sm", elem_id="gs-dl-png"
                        )
                        dl_json = gr.DownloadButton(
                            "Results (JSON)", interactive=False, size="sm", elem_id="gs-dl-json"
                        )
        with gr.Tab("Video", id="video", elem_id="gs-tab-video"):
            build_video_tab(
                tracking,
                session,
                engine={"concurrency_id": ENGINE, "concurrency_limit": concurrency_limit},
                threshold=(threshold_min, threshold_default),
                allowed=_in_upload_folder,
                max_upload=max_upload,
            )

        downloads = [dl_zip, dl_png, dl_json]
        outputs = [session, result, index_info, status, region_info, table, *downloads]
        engine = {"concurrency_id": ENGINE, "concurrency_limit": concurrency_limit}
        draw = {"concurrency_id": RENDER, "concurrency_limit": 4}

        def then_export(dep: Any) -> None:
            dep.then(on_exports, [opacity, session], downloads, show_progress="hidden", **draw)

        then_export(
            source.change(
                on_image, [source, opacity, session], outputs, show_progress_on=[result], **engine
            )
        )
        query_inputs = [phrases, threshold, level, top_k, opacity, session, negative]
        then_export(phrases.submit(on_query, query_inputs, outputs, **engine))
        then_export(negative.submit(on_query, query_inputs, outputs, **engine))
        then_export(run.click(on_query, query_inputs, outputs, **engine))
        then_export(threshold.release(on_settings, query_inputs, outputs, **engine))
        then_export(top_k.release(on_settings, query_inputs, outputs, **engine))
        then_export(level.input(on_settings, query_inputs, outputs, **engine))
        click_inputs = [mode, opacity, session, threshold, top_k, negative]
        then_export(result.select(on_click, click_inputs, outputs, **engine))
        then_export(clear.click(on_clear_prompts, [opacity, session], outputs, **draw))
        # .change (not .release): typing a value fires it too; while a redraw runs, further
        # changes collapse into one (trigger_mode "always_last").
        then_export(
            opacity.change(on_opacity, [opacity, session], outputs, show_progress="hidden", **draw)
        )
        table.select(on_row, [session], [region_info], **draw)
    return demo


def _in_upload_folder(path: str) -> bool:
    """Whether ``path`` is a file in gradio's upload cache (where uploads and examples live)."""
    from gradio.utils import get_upload_folder, is_in_or_equal

    try:
        return is_in_or_equal(path, get_upload_folder()) and Path(path).is_file()
    except (OSError, ValueError):
        return False


def _close_session(session: Any) -> None:
    """``gr.State`` delete callback: remove the tab's export files."""
    close: Callable[[], None] | None = getattr(session, "close", None)
    if close is not None:
        close()
