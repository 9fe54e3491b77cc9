"""``grounded-sam app`` serves the page on loopback with the models given on the command line."""

from __future__ import annotations

import socket
import time
import urllib.request

from .conftest import popen_cli, run_cli


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_app_serves_on_loopback(model_args, tmp_path):
    port = _free_port()
    proc = popen_cli(["app", "--port", str(port), *model_args], tmp_path / "app")
    try:
        deadline = time.monotonic() + 180
        body = ""
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as resp:
                    body = resp.read().decode("utf-8", "replace")
                    break
            except OSError:
                time.sleep(1)
        assert proc.poll() is None, (tmp_path / "app.err").read_text()[-2000:]
        assert "gradio" in body.lower()
        printed = (tmp_path / "app.out").read_text()
        assert f"127.0.0.1:{port}" in printed and "grounded-sam app --share" in printed
        assert "share=True` in `launch()`" not in printed  # gradio's hint names its own API
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_app_bad_port_is_one_line():
    out = run_cli(["app", "--port", "0"])
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
