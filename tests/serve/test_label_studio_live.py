"""Against a real Label Studio: its API connects our server and stores our predictions.

Needs ``label-studio`` installed in a separate virtual environment (it pins its own
dependencies): ``python -m venv ../venv-ls && ../venv-ls/bin/pip install label-studio``, then
``LABEL_STUDIO_BIN=../venv-ls/bin/label-studio python -m pytest -m integration tests/serve``
(``.ci/run`` does this). Skipped when no ``label-studio`` executable is found.

The test starts Label Studio on 127.0.0.1 with a temporary data dir (local ML backends
allowed: ``ML_BLOCK_LOCAL_IP=false``, ``USE_DEFAULT_BANNED_SUBNETS=false``; legacy tokens
enabled for its user), starts ``grounded-sam serve`` with ``LABEL_STUDIO_URL`` and the user's
token and an API key, creates a BrushLabels project, imports a real photo, connects the
server as the project's ML backend (basic auth, the key as password), asks Label Studio to
retrieve predictions, and checks that the stored prediction decodes (Label Studio's RLE) to
exactly the masks ``/v1/segment`` returns for the same image and phrases, with the query
option the ML backend's extra params set (Label Studio sends them with ``/setup``).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from pycocotools import mask as mask_utils

from grounded_sam.serve.brush import rle_to_mask
from tests.cli.conftest import ENTRY, cli_env

pytestmark = pytest.mark.integration

TOKEN = "0123456789abcdef0123456789abcdef01234567"
KEY = "backend-key"
CONFIG = """<View>
  <Image name="image" value="$image"/>
  <BrushLabels name="tag" toName="image">
    <Label value="date"/><Label value="fig"/><Label value="Nut" hint="hazelnut"/>
  </BrushLabels>
</View>"""
PHOTO = Path(__file__).resolve().parents[2] / "grounded_sam" / "app" / "examples" / "fruits.jpg"
WHERE = "import label_studio, os; print(os.path.dirname(label_studio.__file__))"
ENABLE_LEGACY_TOKENS = """
from jwt_auth.models import JWTSettings
from organizations.models import Organization
for org in Organization.objects.all():
    s, _ = JWTSettings.objects.get_or_create(organization=org)
    s.legacy_api_tokens_enabled = True
    s.save()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(url: str, proc: subprocess.Popen, log: Path, seconds: float = 300) -> None:
    deadline = time.monotonic() + seconds
    while True:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"{url} did not come up: {log.read_text()[-3000:]}"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def label_studio(tmp_path_factory: pytest.TempPathFactory):
    binary = os.environ.get("LABEL_STUDIO_BIN") or shutil.which("label-studio")
    if not binary:
        pytest.skip("label-studio is not installed (set LABEL_STUDIO_BIN; see the docstring)")
    python = str(Path(binary).with_name("python"))
    work = tmp_path_factory.mktemp("label-studio")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABEL_STUDIO", "PYTHON"))}
    env.update(LABEL_STUDIO_BASE_DATA_DIR=str(work / "data"), ML_BLOCK_LOCAL_IP="false",
               USE_DEFAULT_BANNED_SUBNETS="false")  # fmt: skip
    log = work / "ls.log"
    proc = subprocess.Popen(
        [binary, "start", "--no-browser", "--port", str(port), "--internal-host", "127.0.0.1",
         "--data-dir", str(work / "data"), "--username", "admin@example.com",
         "--password", "Integration-Pass-1", "--user-token", TOKEN],
        stdout=log.open("w"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        _wait(f"{url}/health", proc, log)
        where = subprocess.run(
            [python, "-c", WHERE],
            capture_output=True, text=True, env=env, check=True, timeout=120,
        ).stdout.strip()  # fmt: skip
        subprocess.run(
            [python, "manage.py", "shell", "-c", ENABLE_LEGACY_TOKENS], cwd=where, env=env,
            check=True, capture_output=True, timeout=300,
        )  # fmt: skip
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def backend(label_studio, model_args, tmp_path_factory: pytest.TempPathFactory):
    port = _free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    env = cli_env(LABEL_STUDIO_URL=label_studio, LABEL_STUDIO_API_KEY=TOKEN,
                  GROUNDED_SAM_API_KEY=KEY)  # fmt: skip
    proc = subprocess.Popen(
        [*ENTRY, "serve", *model_args, "--port", str(port)],
        stdout=log.open("w"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
    )  # fmt: skip
    try:
        _wait(f"http://127.0.0.1:{port}/health", proc, log)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(30)


def test_label_studio_stores_our_masks(label_studio, backend) -> None:
    ls = httpx.Client(base_url=label_studio, headers={"Authorization": f"Token {TOKEN}"},
                      timeout=300)  # fmt: skip
    r = ls.post("/api/projects", json={"title": "grounded-sam test", "label_config": CONFIG})
    assert r.status_code == 201, r.text
    project = r.json()["id"]
    image = PHOTO.read_bytes()
    r = ls.post(f"/api/projects/{project}/import",
                files={"file": (PHOTO.name, image, "image/jpeg")})  # fmt: skip
    assert r.status_code == 201, r.text
    (task,) = ls.get("/api/tasks", params={"project": project}).json()["tasks"]
    assert task["data"]["image"].startswith("/data/upload/")
    r = ls.post(
        "/api/ml",
        json={
            "url": backend,
            "project": project,
            "title": "grounded-sam",
            "is_interactive": False,
            "auth_method": "BASIC_AUTH",
            "basic_auth_user": "label-studio",
            "basic_auth_pass": KEY,
            "extra_params": {"calibration": "per_phrase"},  # sent with /setup
        },
    )
    assert r.status_code == 201, r.text  # fmt: skip
    r = ls.post("/api/dm/actions", params={"id": "retrieve_tasks_predictions", "project": project},
                json={"selectedItems": {"all": False, "included": [task["id"]]}})  # fmt: skip
    assert r.status_code == 200, r.text
    (prediction,) = ls.get("/api/predictions/", params={"task": task["id"]}).json()
    assert prediction["model_version"].startswith("grounded-sam-")
    stored = {}
    for result in prediction["result"]:
        assert result["type"] == "brushlabels" and result["value"]["format"] == "rle"
        h, w = result["original_height"], result["original_width"]
        mask = rle_to_mask(result["value"]["rle"], h, w)
        stored[(result["value"]["brushlabels"][0], mask.tobytes())] = result["score"]
    assert stored, "Label Studio stored no masks"

    def segment(**options: str) -> dict[tuple[str, bytes], float]:
        r = httpx.post(
            f"{backend}/v1/segment",
            headers={"X-API-Key": KEY},
            timeout=300,
            files={"image": (PHOTO.name, image)},
            data={"prompt": "date, fig, hazelnut", **options},
        )
        assert r.status_code == 200, r.text  # fmt: skip
        names = {"date": "date", "fig": "fig", "hazelnut": "Nut"}
        return {
            (names[i["label"]], mask_utils.decode(i["mask"]).astype(bool).tobytes()): i[
                "confidence"
            ]
            for i in r.json()["instances"]
        }

    ours = segment(calibration="per_phrase")  # the model's extra params reached /predict
    assert stored.keys() == ours.keys()
    for k, score in stored.items():
        assert score == pytest.approx(ours[k])
    default = segment()
    assert any(score != pytest.approx(default.get(k, -1.0)) for k, score in stored.items())
