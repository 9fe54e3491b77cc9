"""python -m grounded_sam.clip.local_copy: a local-dir: folder that loads the same model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from grounded_sam.clip.loading import load_clip
from grounded_sam.clip.local_copy import main, save_clip_local_dir


def test_copy_loads_the_same_weights(tiny_model_specs: tuple[str, str], tmp_path: Path) -> None:
    _, clip = tiny_model_specs
    out = save_clip_local_dir(clip, tmp_path / "copy")
    assert sorted(p.name for p in out.iterdir()) == [
        "open_clip_config.json", "open_clip_model.safetensors"
    ]  # fmt: skip
    config = json.loads((out / "open_clip_config.json").read_text())
    assert {"model_cfg", "preprocess_cfg"} <= set(config)
    original = load_clip(clip, device="cpu")
    copy = load_clip(f"local-dir:{out}", device="cpu")
    phrases = ["a fig", "a date"]
    torch.testing.assert_close(copy.encode_text(phrases), original.encode_text(phrases))
    for (name, a), (_, b) in zip(
        original.model.state_dict().items(), copy.model.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name


def test_command_line(tiny_model_specs, tmp_path: Path, capsys) -> None:
    _, clip = tiny_model_specs
    assert main([clip, str(tmp_path / "c")]) == 0
    assert f"--clip local-dir:{tmp_path / 'c'}" in capsys.readouterr().out
    assert main(["local-dir:/nonexistent/clip", str(tmp_path / "d")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "/nonexistent/clip" in err
    assert not (tmp_path / "d").exists()


def test_unknown_architecture_is_a_clear_error(tmp_path: Path) -> None:
    from grounded_sam.errors import ModelLoadError

    with pytest.raises(ModelLoadError, match="unknown open_clip architecture"):
        save_clip_local_dir("ViT-Q-99:nothing", tmp_path / "x")


@pytest.mark.parametrize("spec", ["ViT-B-16:laion2b_s34b_b88k", "hf-hub:someone/some-clip"])
@pytest.mark.parametrize("why", ["no network", "HF_HUB_OFFLINE"])
def test_offline_fails_at_once_with_one_line(
    spec: str, why: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys
) -> None:
    """No download attempt (so no retries) when the Hub is out and nothing is cached."""
    import huggingface_hub
    import open_clip

    import grounded_sam.hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    if why == "no network":
        monkeypatch.setattr(grounded_sam.hub, "hub_reachable", lambda *a, **k: False)
    else:
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)

    def no_download(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(open_clip, "create_model", no_download)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_download)
    assert main([spec, str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and repr(spec) in err, err
    assert ("HF_HUB_OFFLINE" if why == "HF_HUB_OFFLINE" else "cannot be reached") in err
    assert "machine that can reach the Hugging Face Hub" in err
    assert not (tmp_path / "out").exists()
