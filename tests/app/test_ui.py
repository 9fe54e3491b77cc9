"""The gradio page is built as intended, and the server binds, limits and queues as documented."""

from __future__ import annotations

import builtins
import sys
from pathlib import Path

import gradio as gr
import pytest

from grounded_sam.app import callbacks as cb
from grounded_sam.app import server, ui

APP_DIR = Path(ui.__file__).parent


def _by_elem_id(demo: gr.Blocks) -> dict[str, gr.components.Component]:
    return {b.elem_id: b for b in demo.blocks.values() if getattr(b, "elem_id", None)}


def test_page_has_every_widget(tiny_gs) -> None:
    demo = ui.build_app(tiny_gs)
    blocks = _by_elem_id(demo)
    for elem_id in (
        "gs-input", "gs-examples", "gs-index-info", "gs-phrases", "gs-run", "gs-threshold",
        "gs-refinement", "gs-topk", "gs-click-mode", "gs-clear-prompts", "gs-result",
        "gs-opacity", "gs-status", "gs-region-info", "gs-regions", "gs-dl-zip", "gs-dl-png",
        "gs-dl-json", "gs-models", "gs-negative",
    ):  # fmt: skip
        assert elem_id in blocks or elem_id == "gs-examples", elem_id
    threshold = blocks["gs-threshold"]
    # The slider spans 0.1-0.9 and starts at the engine's threshold (0 for tiny test models).
    assert threshold.maximum == 0.9 and threshold.minimum == min(0.1, tiny_gs.threshold)
    assert threshold.value == tiny_gs.threshold
    assert blocks["gs-refinement"].choices == [(k, k) for k in cb.REFINEMENT_LEVELS]
    assert blocks["gs-click-mode"].choices == [(m, m) for m in cb.CLICK_MODES]
    assert blocks["gs-topk"].value == tiny_gs.top_k
    assert blocks["gs-input"].type == "filepath"  # gradio's temp file; we only read it
    assert blocks["gs-result"].interactive is False
    assert "cpu" in blocks["gs-models"].value
    # Every session gets its own state; the template is an empty Session.
    states = [b for b in demo.blocks.values() if isinstance(b, gr.State)]
    assert len(states) == 1 and isinstance(states[0].value, cb.Session)
    assert states[0].value.index is None
    # Engine events share one concurrency group, so model work is queued, not parallel.
    engine_fns = [f for f in demo.fns.values() if f.concurrency_id == ui.ENGINE]
    assert len(engine_fns) >= 7
    assert {f.concurrency_limit for f in engine_fns} == {1}


def test_no_stub_files_written_next_to_the_code(tiny_gs) -> None:
    ui.build_app(tiny_gs)
    assert not list(APP_DIR.glob("*.pyi"))


def test_unreadable_upload_gives_a_clear_message(tiny_gs, tmp_path: Path) -> None:
    from gradio.data_classes import ImageData

    demo = ui.build_app(tiny_gs)
    source = _by_elem_id(demo)["gs-input"]
    bad = tmp_path / "notes.jpg"
    bad.write_bytes(b"definitely not an image")
    problem = source.preprocess(ImageData(path=str(bad), orig_name="notes.jpg"))
    assert problem.message().startswith("Could not read 'notes.jpg' as an image.")
    good = source.preprocess(ImageData(path=str(ui.example_images()[0]), orig_name="x.jpg"))
    assert Path(good).is_file()


def test_help_documents_levels_and_limits() -> None:
    text = ui.help_markdown()
    assert "4096 px" in text and "20MB" in text
    for name, level in cb.REFINEMENT_LEVELS.items():
        assert f"| {name} | {level.refine} |" in text and level.description
    assert "Foreground point" in text and "Box corners" in text
    assert "Find similar" in text and "Negative phrases" in text


def test_require_gradio_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_gradio(name, *args, **kwargs):
        if name == "gradio" or name.startswith("gradio."):
            raise ImportError("No module named 'gradio'")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "gradio", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_gradio)
    with pytest.raises(ImportError, match=r'pip install -e "\.\[app\]"'):
        server.require_gradio()
    with pytest.raises(ImportError, match=r'pip install -e "\.\[app\]"'):
        server.launch(sam="x", clip="y")


def test_gradio_is_imported_only_when_serving() -> None:
    # grounded_sam.app, .callbacks and .server import without gradio (the optional extra):
    # no module-level gradio import (checked on the source, without a slow fresh interpreter).
    import ast

    for name in ("__init__.py", "callbacks.py", "server.py", "session.py", "queries.py",
                 "render.py", "exports.py"):  # fmt: skip
        tree = ast.parse((APP_DIR / name).read_text())
        for node in tree.body:
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            assert not any(n.split(".")[0] == "gradio" for n in names), (name, names)


def test_launch_defaults(tiny_gs, monkeypatch: pytest.MonkeyPatch) -> None:
    from grounded_sam.pipeline import GroundedSAM

    loaded, launched, queued = {}, {}, {}
    monkeypatch.setattr(
        GroundedSAM, "from_pretrained", classmethod(lambda cls, **kw: loaded.update(kw) or tiny_gs)
    )
    real_queue = gr.Blocks.queue

    def fake_queue(self, *args, **kwargs):
        queued.update(kwargs)
        return real_queue(self, *args, **kwargs)

    monkeypatch.setattr(gr.Blocks, "queue", fake_queue)
    monkeypatch.setattr(gr.Blocks, "launch", lambda self, **kw: launched.update(kw))
    demo = server.launch(sam="s", clip="c", device="cpu", dtype="float32", threshold=0.2, top_k=3)
    assert isinstance(demo, gr.Blocks)
    assert loaded == {
        "sam": "s", "clip": "c", "device": "cpu", "dtype": "float32", "threshold": 0.2, "top_k": 3
    }  # fmt: skip
    assert launched["server_name"] == "127.0.0.1" and launched["server_port"] == 7860
    assert launched["share"] is False
    assert launched["max_file_size"] == "20mb"
    assert launched["prevent_thread_lock"] is False
    assert launched["show_error"] is False  # only our own messages reach the page
    assert queued["default_concurrency_limit"] == 1 and queued["max_size"] == 64


def test_serve_options(tiny_gs, monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    launched = {}
    monkeypatch.setattr(gr.Blocks, "launch", lambda self, **kw: launched.update(kw))
    server.serve(tiny_gs, host="0.0.0.0", port=9000, share=True, max_file_size=1000, block=False)
    assert launched["server_name"] == "0.0.0.0" and launched["server_port"] == 9000
    assert launched["share"] is True and launched["max_file_size"] == 1000
    assert launched["prevent_thread_lock"] is True
    assert "anyone who can reach this machine" in caplog.text
    with pytest.raises(ValueError, match="concurrency_limit"):
        server.serve(tiny_gs, concurrency_limit=0)


def _handler(demo: gr.Blocks, name: str):
    fns = [f.fn for f in demo.fns.values() if getattr(f.fn, "__name__", "") == name]
    assert fns, name
    return fns[0]


@pytest.mark.filterwarnings("ignore:.*:UserWarning")  # gr.Warning outside a request
def test_image_handler_reads_only_gradio_uploads(
    tiny_gs, photo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    demo = ui.build_app(tiny_gs)
    on_image = _handler(demo, "on_image")
    session = cb.Session()
    # A server path that did not come through gradio's upload cache is refused.
    out = on_image(str(photo), 0.5, session)
    assert out[0] is session and "Upload the image through the page" in out[3]
    assert session.index is None
    # An unreadable upload and an upload in the cache.
    out = on_image(ui._UnreadableUpload("x.gif"), 0.5, session)
    assert "Could not read 'x.gif' as an image" in out[3]
    upload = tmp_path / "gradio" / "abc123" / photo.name
    upload.parent.mkdir(parents=True)
    shutil.copy(photo, upload)
    out = on_image(str(upload), 0.5, session)
    assert session.index is not None and session.index_builds == 1
    assert "Indexes built in this session: 1" in out[2] and out[1].shape == session.image.shape
    # gradio may report the same upload twice: the second report changes nothing.
    again = on_image(str(upload), 0.5, session)
    assert session.index_builds == 1 and again[1] == gr.skip()
    # Removing the image clears the session.
    on_image(None, 0.5, session)
    assert session.index is None and session.result is None
    session.close()


@pytest.mark.filterwarnings("ignore:.*:UserWarning")
def test_query_handler_messages(tiny_gs, indexed: cb.Session) -> None:
    on_query = _handler(ui.build_app(tiny_gs), "on_query")
    out = on_query("  ", 0.3, "medium", 20, 0.5, indexed)
    # outputs: session, image, index line, status, region line, table, 3 download buttons
    assert out[3].startswith("⚠️ Type at least one phrase")
    assert out[1] == gr.skip() and out[6] == gr.skip()  # nothing else changes
    out = on_query("zebra", 0.9, "medium", 20, 0.5, indexed)
    assert out[3].startswith("No region matched 'zebra'") and out[5] == []
    out = on_query("dog", 0.0, "low", 20, 0.5, indexed)
    assert out[3].startswith("Found") and len(out[5]) == len(indexed.result.dets)
    assert out[1].shape == indexed.image.shape
    # A new result disables the downloads until its files are written.
    assert all(b.interactive is False for b in out[6:9])
    on_exports = _handler(ui.build_app(tiny_gs), "on_exports")
    buttons = on_exports(0.5, indexed)
    paths = [Path(b.value["path"] if isinstance(b.value, dict) else b.value) for b in buttons]
    assert all(b.interactive is True for b in buttons) and all(p.is_file() for p in paths)
    assert [p.suffix for p in paths] == [".zip", ".png", ".json"]


def test_page_sessions_share_one_bounded_index_store(tiny_gs, monkeypatch) -> None:
    from copy import deepcopy

    from grounded_sam.grounding.store import DEFAULT_MAX_BYTES, IndexStore

    def template(demo: gr.Blocks) -> cb.Session:
        (state,) = [b for b in demo.blocks.values() if isinstance(b, gr.State)]
        return state.value

    default = template(ui.build_app(tiny_gs)).store
    assert default.max_bytes == DEFAULT_MAX_BYTES == 2 * 1024**3
    small = template(ui.build_app(tiny_gs, max_index_bytes=12345))
    assert small.store.max_bytes == 12345 and deepcopy(small).store is small.store
    mine = IndexStore(99)
    assert template(ui.build_app(tiny_gs, index_store=mine)).store is mine
    # the server's and the CLI's bound reach the page
    built = {}
    real = ui.build_app
    monkeypatch.setattr(ui, "build_app", lambda gs, **kw: built.update(kw) or real(gs, **kw))
    monkeypatch.setattr(gr.Blocks, "launch", lambda self, **kw: None)
    server.serve(tiny_gs, max_index_bytes=4096, block=False)
    assert built["max_index_bytes"] == 4096


def test_cli_max_index_memory_reaches_the_server(tiny_gs, monkeypatch) -> None:
    from grounded_sam.cli import app as cli_app
    from grounded_sam.cli.main import build_parser

    served = {}
    monkeypatch.setattr(cli_app, "load_engine", lambda args: tiny_gs)
    monkeypatch.setattr(server, "serve", lambda gs, **kw: served.update(kw))
    args = build_parser().parse_args(["app", "--max-index-memory", "64"])
    assert args.run(args) == 0 and served["max_index_bytes"] == 64 * 1024**2
    args = build_parser().parse_args(["app"])
    args.run(args)
    assert served["max_index_bytes"] == 2 * 1024**3
