"""The web page driven in a real browser: Debian's Chromium through Playwright.

The app runs in a subprocess on 127.0.0.1 (a free port) with tiny random models.
Screenshots are kept in ``test-artifacts/`` at the repository root.

Without Chromium (``apt-get install -y chromium``; another binary via
``$GROUNDED_SAM_CHROMIUM``) or Playwright the tests that use the ``browser`` fixture are
skipped with one line saying so, so that the README's test command passes on a machine that
has only Python (the raw-HTTP test needs no browser and always runs). CI sets
``GROUNDED_SAM_REQUIRE_BROWSER=1`` (``.ci/run``; ``CI=true`` does the same): then a missing
browser, or one that cannot start, fails the tests instead.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = os.environ.get("GROUNDED_SAM_CHROMIUM") or "/usr/bin/chromium"
REQUIRE_BROWSER = any(
    os.environ.get(var, "").strip().lower() in {"1", "true", "yes", "on"}
    for var in ("GROUNDED_SAM_REQUIRE_BROWSER", "CI")
)


def _missing_browser() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if not Path(CHROMIUM).exists():
        return f"Chromium not found at {CHROMIUM}"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright is not installed"
    return None


_MISSING = _missing_browser()
#: Why the tests that use the ``browser`` fixture are skipped here (None: they run, or fail
#: when a browser is required). tests/app/conftest.py adds the skip at collection, which
#: pytest -ra reports as one line.
BROWSER_SKIP_REASON = (
    f"real-browser tests skipped: {_MISSING}; to run them: apt-get install -y chromium "
    "(GROUNDED_SAM_REQUIRE_BROWSER=1 makes this a failure, as in CI)"
    if _MISSING and not REQUIRE_BROWSER
    else None
)

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
STEP = 60_000  # ms allowed for one step on a slow CI machine

SERVER = textwrap.dedent(
    """
    import logging, sys
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(asctime)s %(name)s %(message)s")
    from grounded_sam import EverythingSettings
    from grounded_sam.app.server import launch
    sam, clip, port, propagator = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    launch(sam=sam, clip=clip, device="cpu", host="127.0.0.1", port=port, threshold=0.0,
           propagator=propagator,
           proposal_settings=EverythingSettings(points_per_side=8, pred_iou_thresh=0.0,
                                                stability_score_thresh=0.5))
    """
)


class App:
    """The running app: its URL and its log."""

    def __init__(self, url: str, log: Path) -> None:
        self.url = url
        self.log = log

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def index_builds(self) -> int:
        return self.log_text().count("Session indexed")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app(
    tiny_model_specs: tuple[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[App]:
    from grounded_sam.video.tiny import save_tiny_sam2_video

    sam, clip = tiny_model_specs
    work = tmp_path_factory.mktemp("app")
    propagator = save_tiny_sam2_video(work / "tiny-sam2-video")  # the Video tab's --propagator
    script = work / "serve.py"
    script.write_text(SERVER)
    log = work / "server.log"
    port = _free_port()
    env = dict(
        os.environ,
        GRADIO_ANALYTICS_ENABLED="False",
        PYTHONUNBUFFERED="1",
        GRADIO_TEMP_DIR=str(work / "gradio"),
        TMPDIR=str(work),
    )
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, str(script), sam, clip, str(port), str(propagator)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=REPO,
        )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 150
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the app exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the app did not answer on {url}:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield App(url, log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def browser():
    # Tests using it are skipped without a browser (BROWSER_SKIP_REASON) unless one is required.
    if _MISSING:
        pytest.fail(
            f"{_MISSING} and GROUNDED_SAM_REQUIRE_BROWSER/CI is set: apt-get update && "
            "apt-get install -y chromium (pip install playwright)"
        )
    from playwright.sync_api import sync_playwright

    pw = sync_playwright().start()
    try:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    except Exception as exc:  # noqa: BLE001
        pw.stop()
        pytest.fail(f"Chromium could not start: {exc}")
    yield browser
    browser.close()
    pw.stop()


def _new_page(browser, app: App):
    context = browser.new_context(viewport={"width": 1400, "height": 1050}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(STEP)
    page.goto(app.url)
    page.wait_for_selector("#gs-input input[type=file]", state="attached")
    return page


def _text(page, selector: str) -> str:
    return page.locator(selector).first.inner_text()


def _wait_text(page, selector: str, text: str) -> str:
    try:
        page.wait_for_function(
            "([sel, text]) => { const e = document.querySelector(sel);"
            " return e !== null && e.innerText.includes(text); }",
            arg=[selector, text],
            timeout=STEP,
        )
    except Exception:  # noqa: BLE001
        pytest.fail(f"{selector} never showed {text!r}; it shows {_text(page, selector)!r}")
    return _text(page, selector)


def _phrases(page, text: str):
    box = page.locator("#gs-phrases").locator("textarea, input").first
    box.fill(text)
    return box


def _upload(page, path: Path) -> None:
    page.set_input_files("#gs-input input[type=file]", str(path))


def _result_size(page) -> tuple[int, int]:
    img = page.locator("#gs-result img").first
    img.wait_for(state="visible")
    page.wait_for_function(
        "() => { const i = document.querySelector('#gs-result img');"
        " return i !== null && i.complete && i.naturalWidth > 0; }"
    )
    w, h = img.evaluate("e => [e.naturalWidth, e.naturalHeight]")
    return int(w), int(h)


def _table_rows(page) -> int:
    count = page.locator("#gs-regions [role=grid]").first.get_attribute("aria-rowcount")
    return int(count) - 1  # minus the header row


def _click_pixel(page, x: int, y: int) -> None:
    """Click the result image at an image pixel (as gradio maps clicks back to pixels)."""
    img = page.locator("#gs-result img").first
    box = img.bounding_box()
    nw, nh = img.evaluate("e => [e.naturalWidth, e.naturalHeight]")
    r = min(box["width"] / nw, box["height"] / nh, 1.0)
    ox, oy = (box["width"] - nw * r) / 2, (box["height"] - nh * r) / 2
    page.mouse.click(box["x"] + ox + (x + 0.5) * r, box["y"] + oy + (y + 0.5) * r)


def _download(page, button: str, tmp: Path) -> Path:
    page.wait_for_selector(f"{button}:not([disabled])")
    with page.expect_download(timeout=STEP) as info:
        page.click(button)
    download = info.value
    path = tmp / download.suggested_filename
    download.save_as(path)
    return path


def _interior_pixel(mask: np.ndarray) -> tuple[int, int]:
    """(x, y) of the mask pixel farthest from its border."""
    import cv2

    padded = np.pad(mask.astype(np.uint8), 1)  # the image border counts as outside
    dist = cv2.distanceTransform(padded, cv2.DIST_L2, 3)[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return int(x), int(y)


def test_phrases_exports_and_prompts_in_a_real_browser(
    browser, app: App, photo: Path, tmp_path: Path  # browser first: skips before the app starts
) -> None:
    from grounded_sam.utils.masks import decode_rle

    ARTIFACTS.mkdir(exist_ok=True)
    page = _new_page(browser, app)
    assert "SAM" in _text(page, "#gs-models") and "cpu" in _text(page, "#gs-models")
    assert page.locator("#gs-dl-json").is_disabled()  # nothing to export yet
    builds_before = app.index_builds()
    width, height = Image.open(photo).size

    # Upload a real photograph: it is indexed once.
    _upload(page, photo)
    info = _wait_text(page, "#gs-index-info", "Indexes built in this session: 1")
    assert f"{width}×{height} px" in info and "indexed in" in info
    assert _result_size(page) == (width, height)

    # First phrase, submitted with Enter.
    _phrases(page, "dog").press("Enter")
    status = _wait_text(page, "#gs-status", "'dog'")
    assert "from the cached index" in status
    assert _table_rows(page) >= 1 and "dog" in _text(page, "#gs-regions")
    assert _result_size(page) == (width, height)

    # Second phrases, submitted with the button: answered from the same index.
    _phrases(page, "person, kite")
    page.click("#gs-run")
    status = _wait_text(page, "#gs-status", "'kite'")
    assert "from the cached index" in status and "no re-indexing" in status
    rows = _table_rows(page)
    assert rows >= 1
    table = _text(page, "#gs-regions")
    assert "confidence" in table and "CLIP score" in table and "SAM IoU" in table
    assert "person" in table or "kite" in table
    assert _text(page, "#gs-index-info").endswith("Indexes built in this session: 1.")
    assert app.index_builds() - builds_before == 1, "the second phrase re-indexed the image"
    page.wait_for_selector("#gs-dl-json:not([disabled])")
    page.screenshot(path=str(ARTIFACTS / "app-phrases.png"), full_page=True)

    # Exports: JSON (the CLI's schema), ZIP of PNG masks, overlay PNG.
    doc = json.loads(_download(page, "#gs-dl-json", tmp_path).read_text())
    assert doc["phrases"] == ["person", "kite"] and doc["prompt"] == "person, kite"
    assert doc["width"] == width and doc["height"] == height
    assert doc["num_instances"] == rows == len(doc["instances"])
    assert doc["image"] == photo.name  # the upload's name, not a server path
    first = doc["instances"][0]
    assert first["label"] in ("person", "kite") and 0.0 <= first["confidence"] <= 1.0
    zip_path = _download(page, "#gs-dl-zip", tmp_path)
    with zipfile.ZipFile(zip_path) as zf:
        names = zf.namelist()
        assert len(names) == rows and all(n.endswith(".png") for n in names)
        with zf.open(names[0]) as fh:
            assert Image.open(fh).size == (width, height)
    overlay = Image.open(_download(page, "#gs-dl-png", tmp_path))
    assert overlay.format == "PNG" and overlay.size == (width, height)

    # Clicking a region shows its label, confidence, CLIP score and SAM IoU.
    x, y = _interior_pixel(decode_rle(first["mask"]))
    _click_pixel(page, x, y)
    region = _wait_text(page, "#gs-region-info", "confidence")
    assert "CLIP score" in region and "SAM IoU" in region
    assert "person" in region or "kite" in region

    # A foreground point segments with SAM on the cached embedding.
    page.get_by_label("Foreground point").check()
    _click_pixel(page, width // 3, height // 2)
    status = _wait_text(page, "#gs-status", "SAM mask from 1 foreground point")
    assert "no re-indexing" in status
    _wait_text(page, "#gs-regions", "prompt")
    assert app.index_builds() - builds_before == 1

    # Clear messages: an empty phrase.
    _phrases(page, "  ,  ")
    page.click("#gs-run")
    _wait_text(page, "#gs-status", "Type at least one phrase")
    page.screenshot(path=str(ARTIFACTS / "app-browser.png"), full_page=True)
    page.context.close()


def test_two_tabs_keep_their_own_images_and_results(browser, app: App, tmp_path: Path) -> None:
    from grounded_sam.app.ui import example_images

    ARTIFACTS.mkdir(exist_ok=True)
    examples = example_images()
    a, b = _new_page(browser, app), _new_page(browser, app)

    # Tab B first gets an unreadable file and an image above the size limit.
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"not an image" * 100)
    _upload(b, garbage)
    _wait_text(b, "#gs-status", "Could not read 'garbage.jpg' as an image")
    wide = tmp_path / "wide.png"
    Image.new("RGB", (4100, 8), (20, 30, 40)).save(wide)
    _upload(b, wide)
    _wait_text(b, "#gs-status", "the limit is 4096 px on the longer side")
    _phrases(b, "fig").press("Enter")
    _wait_text(b, "#gs-status", "No image yet")

    # Tab A picks a bundled example from the gallery, tab B uploads another one.
    from tests.app.conftest import other_size

    first, second = examples[0], other_size(examples, examples[0])
    a.locator("#gs-examples button.gallery-item").first.click()  # the first example
    _upload(b, second)
    wa, ha = Image.open(first).size
    wb, hb = Image.open(second).size
    assert (wa, ha) != (wb, hb)
    _wait_text(a, "#gs-index-info", f"{wa}×{ha} px")
    _wait_text(b, "#gs-index-info", f"{wb}×{hb} px")

    # Both tabs ask at once: the requests are queued and each gets its own answer.
    _phrases(a, "date").press("Enter")
    _phrases(b, "fig, hazelnut").press("Enter")
    _wait_text(a, "#gs-status", "'date'")
    _wait_text(b, "#gs-status", "'hazelnut'")
    assert _result_size(a) == (wa, ha) and _result_size(b) == (wb, hb)
    assert "hazelnut" not in _text(a, "#gs-status") and "date" not in _text(b, "#gs-status")
    for page in (a, b):
        assert _text(page, "#gs-index-info").endswith("Indexes built in this session: 1.")
    assert first.name in _text(a, "#gs-index-info")
    assert second.name in _text(b, "#gs-index-info")

    # Opacity re-renders tab A only, without querying again.
    status_a = _text(a, "#gs-status")
    src = a.locator("#gs-result img").first.get_attribute("src")
    a.locator("#gs-opacity input[type=number]").fill("1")
    a.locator("#gs-opacity input[type=number]").press("Enter")
    a.wait_for_function(
        "src => { const i = document.querySelector('#gs-result img');"
        " return i !== null && i.getAttribute('src') !== src && i.complete; }",
        arg=src,
    )
    assert _text(a, "#gs-status") == status_a  # redrawn, not queried again
    a.wait_for_selector("#gs-dl-png:not([disabled])")
    a.screenshot(path=str(ARTIFACTS / "app-tab-a.png"), full_page=True)
    b.screenshot(path=str(ARTIFACTS / "app-tab-b.png"), full_page=True)
    a.context.close()
    b.context.close()


def test_video_tab_tracks_a_clip_the_browser_plays(browser, app: App, tmp_path: Path) -> None:
    from grounded_sam.video.synthetic import demo_video

    ARTIFACTS.mkdir(exist_ok=True)
    page = _new_page(browser, app)
    page.get_by_role("tab", name="Video").click()
    upload = "#gs-video-input input[type=file]"
    page.wait_for_selector(upload, state="attached")

    # Not a video: one clear message, nothing else changes.
    garbage = tmp_path / "notes.mp4"
    garbage.write_bytes(b"definitely not a video" * 100)
    page.set_input_files(upload, str(garbage))
    page.locator("#gs-video-phrases").locator("textarea, input").first.fill("red box")
    page.click("#gs-video-run")
    page.get_by_text("Could not read 'notes.mp4' as a video").first.wait_for()
    assert page.locator("#gs-video-dl-json").is_disabled()

    # A synthetic clip (OpenCV's mp4v, as many tools write): tracked, shown as H.264.
    clip = demo_video(8).write(tmp_path / "shapes.mp4")
    page.locator("#gs-video-input button[aria-label='Clear']").first.click()
    page.set_input_files(upload, str(clip))
    page.locator("#gs-video-phrases").locator("textarea, input").first.fill("red box, blue disc")
    page.click("#gs-video-run")
    status = _wait_text(page, "#gs-video-status", "Tracked shapes.mp4: 8 frames")
    assert "key frame" in status
    assert page.evaluate(
        "() => document.createElement('video').canPlayType('video/mp4; codecs=\"avc1.64000d\"')"
    )
    # The browser decodes the result: metadata and a first picture, at the clip's size.
    page.wait_for_function(
        "() => { const v = document.querySelector('#gs-video-result video');"
        " return v !== null && v.readyState >= 2 && v.videoWidth > 0; }"
    )
    size = page.evaluate(
        "() => { const v = document.querySelector('#gs-video-result video');"
        " return [v.videoWidth, v.videoHeight, v.duration, v.error && v.error.code]; }"
    )
    assert size[:2] == [160, 120] and size[3] is None and 0.5 < size[2] < 1.2, size
    doc = json.loads(_download(page, "#gs-video-dl-json", tmp_path).read_text())
    assert doc["video"] == "shapes.mp4" and doc["num_frames"] == 8
    assert doc["phrases"] == ["red box", "blue disc"]
    mot = _download(page, "#gs-video-dl-mot", tmp_path).read_text().splitlines()
    assert len(mot) == sum(f["num_instances"] for f in doc["frames"])
    page.screenshot(path=str(ARTIFACTS / "app-video.png"), full_page=True)
    page.context.close()


# -- raw HTTP, as a hostile client sends it (no browser) ------------------------------------
# A phrase with a lone surrogate ("\\udcffx", valid JSON) sent to the queue endpoint used to
# crash the server process inside OpenCV; now the page answers with a message and the server
# goes on answering.

ON_IMAGE, ON_QUERY = "on_image", "on_query"


def _post(url: str, body: bytes, ctype: str = "application/json") -> object:
    req = urllib.request.Request(url, data=body, headers={"Content-Type": ctype})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read())


def _fn_index(server: App, api_name: str) -> int:
    with urllib.request.urlopen(server.url + "config", timeout=30) as resp:
        config = json.loads(resp.read())
    return next(i for i, d in enumerate(config["dependencies"]) if d.get("api_name") == api_name)


def _upload_raw(server: App, path: Path) -> str:
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{path.name}"'
            "\r\nContent-Type: image/png\r\n\r\n"
        ).encode()
        + path.read_bytes()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return _post(
        server.url + "gradio_api/upload", body, f"multipart/form-data; boundary={boundary}"
    )[0]


def _call(server: App, fn: int, data: list, session: str) -> dict:
    payload = {"data": data, "fn_index": fn, "session_hash": session, "trigger_id": None}
    _post(server.url + "gradio_api/queue/join", json.dumps(payload).encode())
    url = server.url + f"gradio_api/queue/data?session_hash={session}"
    with urllib.request.urlopen(url, timeout=180) as resp:
        for raw in resp:
            line = raw.decode().strip()
            if line.startswith("data:"):
                msg = json.loads(line[5:])
                if msg.get("msg") == "process_completed":
                    return msg
    raise AssertionError("the queue closed without completing the request")


def test_surrogate_phrase_and_bad_numbers_over_raw_http(app: App, tmp_path: Path) -> None:
    image = tmp_path / "noise.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(image)
    session = uuid.uuid4().hex
    on_image, on_query = _fn_index(app, ON_IMAGE), _fn_index(app, ON_QUERY)
    upload = {
        "path": _upload_raw(app, image),
        "meta": {"_type": "gradio.FileData"},
        "orig_name": "n.png",
    }
    assert _call(app, on_image, [upload, 0.5, None], session)["success"]

    msg = _call(app, on_query, ["\udcffx", 0.0, "medium", 20, 0.5, None, ""], session)
    text = json.dumps(msg["output"])
    assert msg["success"] and "lone surrogate U+DCFF" in text, text

    msg = _call(app, on_query, ["square", "abc", "medium", 20, 0.5, None, ""], session)
    assert not msg["success"]
    assert msg["output"]["error"] == "The threshold must be a number from 0 to 0.9, got 'abc'."

    # The server is still up and answers a normal query in the same session.
    with urllib.request.urlopen(app.url, timeout=30) as resp:
        assert resp.status == 200
    msg = _call(app, on_query, ["square", 0.0, "low", 5, 0.5, None, ""], session)
    status = json.dumps(msg["output"])
    assert msg["success"] and ("Found" in status or "No region matched" in status), status
