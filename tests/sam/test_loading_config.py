"""Config-first loading: the checkpoint's config picks the class, and nothing loads random.

Covers local folders and a fake Hugging Face hub cache (offline, in a fresh interpreter, as a
user on an offline machine would see it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch

from grounded_sam.errors import ModelLoadError
from grounded_sam.sam.loading import load_sam_model, resolve_sam_checkpoint
from grounded_sam.sam.tiny import save_tiny_sam_hq

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def hq_model_dir(tmp_path_factory):
    return save_tiny_sam_hq(tmp_path_factory.mktemp("tiny_hq"))


def _mixed(tmp_path, name, config_from, weights_from):
    folder = tmp_path / name
    folder.mkdir()
    shutil.copy(config_from / "config.json", folder)
    shutil.copy(weights_from / "model.safetensors", folder)
    return folder


def test_hq_folder_loads_as_samhq(hq_model_dir):
    from transformers import SamHQModel

    assert resolve_sam_checkpoint(hq_model_dir).model_type == "sam_hq"
    model = load_sam_model(hq_model_dir, CPU, torch.float32)
    assert isinstance(model, SamHQModel) and not model.training


def test_hq_config_with_sam_weights_is_refused(tmp_path, sam_model_dir, hq_model_dir):
    """25 HQ decoder weights would be newly random: refused, naming them."""
    folder = _mixed(tmp_path, "hq_config_sam_weights", hq_model_dir, sam_model_dir)
    with pytest.raises(ModelLoadError, match=r"missing \(would be random\)") as info:
        load_sam_model(folder, CPU, torch.float32)
    assert "hq_token" in str(info.value) or "mask_decoder." in str(info.value)


def test_sam_config_with_hq_weights_is_refused(tmp_path, sam_model_dir, hq_model_dir):
    folder = _mixed(tmp_path, "sam_config_hq_weights", sam_model_dir, hq_model_dir)
    with pytest.raises(ModelLoadError, match="unexpected"):
        load_sam_model(folder, CPU, torch.float32)


def test_config_without_model_type(tmp_path, sam_model_dir):
    folder = _mixed(tmp_path, "no_type", sam_model_dir, sam_model_dir)
    config = json.loads((folder / "config.json").read_text())
    del config["model_type"]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="no 'model_type'"):
        load_sam_model(folder, CPU, torch.float32)


def _cache_repo(cache, repo, config, weights_dir=None):
    """Write a repo into a hub cache in huggingface_hub's layout (refs/main -> snapshot)."""
    commit = "0" * 40
    base = cache / ("models--" + repo.replace("/", "--"))
    (base / "refs").mkdir(parents=True)
    (base / "refs" / "main").write_text(commit)
    snap = base / "snapshots" / commit
    snap.mkdir(parents=True)
    (snap / "config.json").write_text(json.dumps(config))
    if weights_dir is not None:
        shutil.copy(weights_dir / "model.safetensors", snap)


def test_fake_hub_cache_offline(tmp_path, sam_model_dir, hq_model_dir):
    """Hub ids resolved from a (fake) cache, offline: the cached config decides.

    * facebook/sam-vit-base cached with a CLIP config -> refused, naming 'clip_vision_model'
      and the supported families (formerly: a SamModel with random weights);
    * facebook/sam-vit-large cached with an HQ-SAM config but SAM weights -> refused (HQ
      decoder weights would be random);
    * syscv-community/sam-hq-vit-base cached with a real (tiny) HQ-SAM -> loads as SamHQModel
      through its alias, offline;
    * sam2.1_t not cached -> says the exact `hf download` command and --sam DIR.
    """
    cache = tmp_path / "hub"
    sam_config = json.loads((sam_model_dir / "config.json").read_text())
    hq_config = json.loads((hq_model_dir / "config.json").read_text())
    _cache_repo(cache, "facebook/sam-vit-base", {"model_type": "clip_vision_model"})
    _cache_repo(cache, "facebook/sam-vit-large", hq_config, sam_model_dir)
    _cache_repo(cache, "syscv-community/sam-hq-vit-base", hq_config, hq_model_dir)
    assert sam_config["model_type"] == "sam"
    script = textwrap.dedent(
        """
        import torch
        from grounded_sam.errors import ModelLoadError
        from grounded_sam.sam.loading import load_sam_model

        for spec in ("vit_b", "facebook/sam-vit-large", "hq_vit_b", "sam2.1_t"):
            try:
                model = load_sam_model(spec, torch.device("cpu"), torch.float32)
            except ModelLoadError as exc:
                print("ERROR:", spec, "|", str(exc).replace("\\n", " "))
            else:
                print("LOADED:", spec, "|", type(model).__name__)
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    env.update(HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(cache), OMP_NUM_THREADS="1")
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = {
        line.split(" ", 2)[1]: line
        for line in done.stdout.splitlines()
        if line.startswith(("ERROR:", "LOADED:"))
    }
    assert len(lines) == 4, done.stdout + done.stderr[-2000:]
    clip = lines["vit_b"]
    assert clip.startswith("ERROR:") and "'clip_vision_model'" in clip
    assert "facebook/sam-vit-base" in clip
    assert all(t in clip for t in ("'sam'", "'sam_hq'", "'sam2'"))
    mixed = lines["facebook/sam-vit-large"]
    assert mixed.startswith("ERROR:") and "would be random" in mixed and "HQ-SAM" in mixed
    assert lines["hq_vit_b"].endswith("| SamHQModel")
    missing = lines["sam2.1_t"]
    assert missing.startswith("ERROR:") and "HF_HUB_OFFLINE=1" in missing
    assert "`hf download facebook/sam2.1-hiera-tiny --local-dir DIR`" in missing
    assert "--sam DIR" in missing
