"""``grounded-sam serve`` as a real process on a free port, called over HTTP."""

from __future__ import annotations

import socket
import subprocess
import time

import httpx

from tests.cli.conftest import ENTRY, cli_env
from tests.serve.conftest import png, scene


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_command_answers_over_http(model_args, tmp_path) -> None:
    port = _free_port()
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(
        [*ENTRY, "serve", *model_args, "--port", str(port), "--index-cache-mb", "64"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        env=cli_env(GROUNDED_SAM_API_KEY="k3y"),
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not come up"
            time.sleep(0.3)
        assert httpx.get(f"{base}/v1/models").status_code == 401
        auth = {"Authorization": "Bearer k3y"}
        info = httpx.get(f"{base}/v1/models", headers=auth).json()
        assert info["device"] == "cpu" and info["default_options"]["threshold"] == 0.0
        assert info["index_cache"]["max_bytes"] == 64 * 1024**2
        image = png(scene(48, 64, seed=3))
        r = httpx.post(
            f"{base}/v1/segment",
            headers=auth,
            timeout=120,
            files={"image": ("p.png", image, "image/png")},
            data={"prompt": "disc"},
        )
        assert r.status_code == 200, r.text
        doc = r.json()
        assert (doc["width"], doc["height"]) == (64, 48) and doc["num_instances"] >= 1
        r = httpx.post(
            f"{base}/v1/query",
            headers=auth,
            timeout=120,
            json={"index_id": doc["index_id"], "prompt": "square"},
        )
        assert r.status_code == 200 and r.json()["phrases"] == ["square"]
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
    assert proc.returncode in (0, -15), (tmp_path / "serve.log").read_text()
