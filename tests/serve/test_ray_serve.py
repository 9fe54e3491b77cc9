"""``grounded-sam serve --ray``: the same app on a local Ray Serve, called over HTTP.

The deployment is built from the CLI's own parsed flags (``ray_plan``), so the flags ->
recipe -> replica path is the command's; only the command's wait-for-Ctrl-C loop is not run.
"""

from __future__ import annotations

import contextlib
import io
import socket

import httpx
import pytest

from tests.local_ray import local_ray
from tests.serve.conftest import png, scene


@pytest.fixture(scope="module")
def ray_address():
    """A local Ray (2 CPUs): the session's from tests/distributed when it runs, else our own."""
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install -e .[ray-serve])")
    pytest.importorskip("ray.serve", reason="Ray Serve is not installed (.[ray-serve])")
    if ray.is_initialized():
        yield ray.get_runtime_context().gcs_address
        return
    with local_ray(ray) as address:
        yield address


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _parse(argv: list[str]):
    from grounded_sam.cli.main import build_parser

    return build_parser().parse_args(argv)


@pytest.fixture(scope="module")
def deployed(ray_address, model_args):
    """The app deployed on Ray Serve from ``serve --ray ...`` flags; yields (URL, recipe)."""
    from ray import serve

    from grounded_sam.cli.serve import ray_plan
    from grounded_sam.serve.ray_serve import deploy

    port = _free_port()
    args = _parse(["serve", *model_args, "--dtype", "float32", "--ray", ray_address,
                   "--replicas", "1", "--cpus-per-replica", "1", "--port", str(port),
                   "--index-cache-mb", "64"])  # fmt: skip
    recipe, scaling = ray_plan(args, "k3y", {})
    assert scaling.deployment_options()["num_replicas"] == 1
    deploy(recipe, scaling, host="127.0.0.1", port=port)
    try:
        yield f"http://127.0.0.1:{port}", recipe
    finally:
        serve.shutdown()


AUTH = {"Authorization": "Bearer k3y"}


def test_ray_serve_answers_as_the_in_process_app(deployed) -> None:
    from fastapi.testclient import TestClient

    base, recipe = deployed
    health = httpx.get(f"{base}/health", timeout=30)
    assert health.status_code == 200 and health.json()["status"] == "UP"
    assert httpx.get(f"{base}/v1/models", timeout=30).status_code == 401  # the app's key
    info = httpx.get(f"{base}/v1/models", headers=AUTH, timeout=30).json()
    assert info["device"] == "cpu" and info["dtype"] == "float32"
    assert info["index_cache"]["max_bytes"] == 64 * 1024**2

    image = png(scene(48, 64, seed=5))
    form = {"prompt": "disc, square", "threshold": "0"}
    r = httpx.post(f"{base}/v1/segment", headers=AUTH, timeout=120,
                   files={"image": ("p.png", image, "image/png")}, data=form)  # fmt: skip
    assert r.status_code == 200, r.text
    remote = r.json()
    assert remote["num_instances"] >= 1 and remote["instances"][0]["mask"]["counts"]

    with TestClient(recipe.build_app()) as local:  # the same recipe, in this process
        ref = local.post("/v1/segment", headers=AUTH, data=form,
                         files={"image": ("p.png", image, "image/png")})  # fmt: skip
        assert ref.status_code == 200, ref.text
        assert ref.json() == remote
        assert local.get("/v1/models", headers=AUTH).json()["models"] == info["models"]

    q = httpx.post(f"{base}/v1/query", headers=AUTH, timeout=120,
                   json={"index_id": remote["index_id"], "prompt": "disc"})  # fmt: skip
    assert q.status_code == 200 and q.json()["phrases"] == ["disc"]
    miss = httpx.post(f"{base}/v1/query", headers=AUTH, timeout=30,
                      json={"index_id": "0" * 64, "prompt": "disc"})  # fmt: skip
    assert miss.status_code == 404 and "/v1/index again" in miss.json()["error"]


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--ray", "--replicas", "0"], "--replicas"),
        (["--ray", "--replicas", "2", "--max-replicas", "3"], "not both"),
        (["--ray", "--min-replicas", "3", "--max-replicas", "2"], "more than --max-replicas"),
        (["--ray", "--min-replicas", "0"], "needs --max-replicas"),
        (["--ray", "--gpus-per-replica", "-1"], "--gpus-per-replica"),
        (["--ray", "--device", "cuda"], "--gpus-per-replica"),
        (["--replicas", "2"], "need --ray"),
    ],
)
def test_bad_ray_flags_are_one_line_errors(flags, words, model_args) -> None:
    from grounded_sam.cli.main import main

    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        code = main(["serve", *model_args, *flags])
    lines = stderr.getvalue().strip().splitlines()
    assert code == 1 and len(lines) == 1, stderr.getvalue()
    assert lines[0].startswith("grounded-sam: error:") and words in lines[0], lines


def test_autoscaling_flags_become_ray_serve_options() -> None:
    from grounded_sam.serve.ray_serve import Scaling

    options = Scaling(min_replicas=0, max_replicas=4, gpus_per_replica=1).deployment_options()
    assert options["autoscaling_config"] == {
        "min_replicas": 0,
        "max_replicas": 4,
        "initial_replicas": 1,
        "target_ongoing_requests": 2.0,
    }
    assert options["ray_actor_options"] == {"num_cpus": 1.0, "num_gpus": 1}
    assert "num_replicas" not in options
    assert Scaling(replicas=3).deployment_options()["num_replicas"] == 3
