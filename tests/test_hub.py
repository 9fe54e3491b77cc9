"""grounded_sam.hub: one quick look at the cache and the network before any download."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import pytest
from huggingface_hub import constants

from grounded_sam import hub
from grounded_sam.clip.loading import clip_hub_model
from grounded_sam.errors import ModelLoadError
from grounded_sam.sam.loading import sam_hub_model

SAM = hub.HubModel("SAM model 'org/sam'", "org/sam", (("config.json",),), "Get SAM.")
CLIP = hub.HubModel(
    "CLIP model 'org/clip'", "org/clip", (("a.safetensors", "a.bin"),), "Get CLIP."
)


@pytest.fixture
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, int]:
    """Empty cache in tmp, hub at a closed local port, counted connection attempts."""
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY", "all_proxy",
                "ALL_PROXY"):  # fmt: skip
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(hub, "_probe_cache", {})
    calls = {"connect": 0}
    real = socket.create_connection

    def counting(*args, **kwargs):
        calls["connect"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", counting)
    return calls


def put_in_cache(cache: Path, repo_id: str, filename: str) -> None:
    """The Hugging Face cache layout: models--org--name/{refs/main, snapshots/REV/FILE}."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    rev = "0" * 40
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(rev)
    (repo / "snapshots" / rev).mkdir(parents=True, exist_ok=True)
    (repo / "snapshots" / rev / filename).write_text("{}")


def test_both_missing_and_unreachable_is_one_error_naming_both(isolated) -> None:
    with pytest.raises(ModelLoadError) as info:
        hub.require_hub_models([SAM, None, CLIP])
    message = str(info.value)
    assert "SAM model 'org/sam' and CLIP model 'org/clip'" in message
    assert "127.0.0.1:9" in message and "cannot be reached" in message
    assert "Get SAM." in message and "Get CLIP." in message
    assert isolated["connect"] == 1  # one probe, no retries
    with pytest.raises(ModelLoadError):
        hub.require_hub_models([SAM])
    assert isolated["connect"] == 1  # the answer is reused


def test_offline_env_fails_without_touching_the_network(isolated, monkeypatch) -> None:
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelLoadError, match=r"HF_HUB_OFFLINE=1") as info:
        hub.require_hub_models([CLIP])
    assert "SAM" not in str(info.value)
    assert isolated["connect"] == 0


def test_cached_and_unreachable_loads_offline_inside_the_session(isolated) -> None:
    cache = Path(constants.HF_HUB_CACHE)
    put_in_cache(cache, "org/sam", "config.json")
    put_in_cache(cache, "org/clip", "a.bin")  # the second alternative of its group
    assert hub.cached(SAM) and hub.cached(CLIP)
    with hub.hub_session([SAM, CLIP]):
        assert constants.HF_HUB_OFFLINE is True
        assert constants.is_offline_mode()
    assert constants.HF_HUB_OFFLINE is False
    assert isolated["connect"] == 1


def test_partly_cached_names_only_the_missing_model(isolated) -> None:
    put_in_cache(Path(constants.HF_HUB_CACHE), "org/sam", "config.json")
    with pytest.raises(ModelLoadError) as info:
        hub.require_hub_models([SAM, CLIP])
    assert "org/clip" in str(info.value) and "org/sam" not in str(info.value)


def test_reachable_hub_lets_the_download_happen(isolated) -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    try:
        constants.ENDPOINT = f"http://127.0.0.1:{server.getsockname()[1]}"
        assert hub.require_hub_models([SAM, CLIP]) is False  # no error: downloads may run
        with hub.hub_session([SAM]):
            assert constants.HF_HUB_OFFLINE is False
    finally:
        server.close()


def test_probe_goes_to_the_proxy_when_one_is_set(monkeypatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert hub._probe_target("https://huggingface.co") == ("proxy.example", 3128)
    monkeypatch.setenv("NO_PROXY", "huggingface.co")
    assert hub._probe_target("https://huggingface.co") == ("huggingface.co", 443)


def test_quiet_hub_logging_survives_importing_transformers() -> None:
    names = ("huggingface_hub", "transformers")
    before = {n: logging.getLogger(n).level for n in names}
    try:
        hub.quiet_hub_logging(0)
        import transformers  # noqa: F401  (configures its logger on first use)
        from transformers.utils import logging as tf_logging

        tf_logging.get_logger("transformers.modeling_utils")
        for name in names:
            assert logging.getLogger(name).getEffectiveLevel() == logging.ERROR, name
        levels = {n: logging.getLogger(n).level for n in names}
        hub.quiet_hub_logging(1)  # -v: left as they are
        assert {n: logging.getLogger(n).level for n in names} == levels
    finally:
        for name, level in before.items():
            logging.getLogger(name).setLevel(level)


def test_model_specs_map_to_hub_repositories(tmp_path: Path) -> None:
    sam = sam_hub_model("vit_b")
    assert sam is not None and sam.repo_id == "facebook/sam-vit-base"
    assert "hf download facebook/sam-vit-base --local-dir" in sam.fix
    assert sam_hub_model(tmp_path) is None and sam_hub_model(str(tmp_path)) is None
    with pytest.raises(ModelLoadError, match="directory not found"):
        sam_hub_model("./no-such-sam-b")  # a missing folder is reported before any hub check
    clip = clip_hub_model("ViT-B-16:laion2b_s34b_b88k")
    assert clip is not None and clip.repo_id == "laion/CLIP-ViT-B-16-laion2B-s34B-b88K"
    assert clip.files == (("open_clip_model.safetensors", "open_clip_pytorch_model.bin"),)
    assert "grounded_sam.clip.local_copy" in clip.fix
    hf = clip_hub_model("hf-hub:org/repo")
    assert hf is not None and hf.repo_id == "org/repo" and hf.files[0] == ("open_clip_config.json",)
