"""load_sam_model: local folders, hub ids, aliases, and the errors users see."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from grounded_sam.errors import ModelLoadError
from grounded_sam.sam.loading import DEFAULT_SAM, SAM_ALIASES, load_sam_model

from .images import shapes_image

CPU = torch.device("cpu")


# -- local folders ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("as_path", [True, False])
def test_local_dir_loads(sam_model_dir, dtype, as_path):
    from transformers import SamModel

    spec = sam_model_dir if as_path else str(sam_model_dir)
    model = load_sam_model(spec, CPU, dtype)
    assert isinstance(model, SamModel)
    assert not model.training
    assert model.config.vision_config.image_size == 256
    assert {p.dtype for p in model.parameters()} == {dtype}
    assert {p.device.type for p in model.parameters()} == {"cpu"}


def test_local_dir_loads_the_saved_weights(sam_model_dir, sam_model):
    from safetensors.torch import load_file

    saved = load_file(sam_model_dir / "model.safetensors")
    state = sam_model.state_dict()
    assert saved and all(torch.equal(state[k], v) for k, v in saved.items())


@pytest.mark.parametrize(
    "make_spec",
    [
        lambda tmp: tmp / "missing",
        lambda tmp: str(tmp / "missing"),
        lambda tmp: "./definitely_missing_sam_folder",
        lambda tmp: "~/definitely_missing_sam_folder",
        lambda tmp: "models/sam/definitely_missing",
    ],
    ids=["Path", "absolute str", "relative ./", "home ~", "nested relative"],
)
def test_missing_dir_names_the_path(tmp_path, make_spec):
    spec = make_spec(tmp_path)
    with pytest.raises(ModelLoadError, match="not found") as info:
        load_sam_model(spec, CPU, torch.float32)
    assert Path(os.fspath(spec)).name in str(info.value)
    assert isinstance(info.value, OSError)  # catchable as an OSError too


def test_folder_without_config_json(tmp_path, sam_model_dir):
    folder = tmp_path / "weights_only"
    folder.mkdir()
    shutil.copy(sam_model_dir / "model.safetensors", folder)
    with pytest.raises(ModelLoadError, match="config.json") as info:
        load_sam_model(folder, CPU, torch.float32)
    assert str(folder) in str(info.value)


def test_file_instead_of_folder(tmp_path):
    file = tmp_path / "sam.safetensors"
    file.write_bytes(b"0")
    with pytest.raises(ModelLoadError, match="not a SAM model folder"):
        load_sam_model(file, CPU, torch.float32)


def test_folder_without_weights(tmp_path, sam_model_dir):
    folder = tmp_path / "config_only"
    folder.mkdir()
    shutil.copy(sam_model_dir / "config.json", folder)
    with pytest.raises(ModelLoadError, match="save_pretrained") as info:
        load_sam_model(folder, CPU, torch.float32)
    assert str(folder) in str(info.value)


def test_truncated_weights(tmp_path, sam_model_dir):
    folder = tmp_path / "truncated"
    shutil.copytree(sam_model_dir, folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ModelLoadError, match="could not be read") as info:
        load_sam_model(folder, CPU, torch.float32)
    assert str(folder) in str(info.value)


def test_folder_of_another_model_type(tmp_path, sam_model_dir):
    """A non-SAM checkpoint must not come back as a SamModel with freshly random weights."""
    folder = tmp_path / "clip"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "clip"}', encoding="utf-8")
    shutil.copy(sam_model_dir / "model.safetensors", folder)
    with pytest.raises(ModelLoadError, match="'clip' model, not SAM") as info:
        load_sam_model(folder, CPU, torch.float32)
    for family in ("'sam'", "'sam_hq'", "'sam2'"):
        assert family in str(info.value)  # names the supported families


# -- hub ids and aliases ---------------------------------------------------------------------


def test_aliases_name_the_official_checkpoints():
    assert SAM_ALIASES["vit_b"] == DEFAULT_SAM == "facebook/sam-vit-base"
    assert SAM_ALIASES["vit_l"] == "facebook/sam-vit-large"
    assert SAM_ALIASES["vit_h"] == "facebook/sam-vit-huge"


@pytest.mark.parametrize(
    ("alias", "repo"),
    [
        ("vit_b", "facebook/sam-vit-base"),
        ("VIT_B", "facebook/sam-vit-base"),
        ("vit-b", "facebook/sam-vit-base"),
        ("vit_l", "facebook/sam-vit-large"),
        ("vit_h", "facebook/sam-vit-huge"),
        ("facebook/sam-vit-huge", "facebook/sam-vit-huge"),
    ],
)
def test_alias_resolves_to_hub_id(monkeypatch, alias, repo):
    """No network: the config lookup is replaced by a recorder that fails like an offline hub."""
    from grounded_sam.sam import loading

    asked = []

    def offline_config(source):
        asked.append(source)
        raise ModelLoadError(f"{source} not cached (test stand-in)")

    monkeypatch.setattr(loading, "_hub_config_file", offline_config)
    # Past the hub check (tests/test_hub.py), which would stop an uncached id before.
    monkeypatch.setattr(loading, "require_hub_models", lambda models: False)
    with pytest.raises(ModelLoadError, match=repo):
        load_sam_model(alias, CPU, torch.float32)
    assert asked == [repo]


@pytest.mark.parametrize(
    ("alias", "repo"),
    [
        ("hq_vit_b", "syscv-community/sam-hq-vit-base"),
        ("HQ_VIT_H", "syscv-community/sam-hq-vit-huge"),
        ("sam2.1_t", "facebook/sam2.1-hiera-tiny"),
        ("sam2.1_s", "facebook/sam2.1-hiera-small"),
        ("sam2.1_b+", "facebook/sam2.1-hiera-base-plus"),
        ("SAM2.1_L", "facebook/sam2.1-hiera-large"),
    ],
)
def test_new_family_aliases(alias, repo):
    assert SAM_ALIASES[alias.lower()] == repo


def test_hub_id_offline_says_how_to_use_a_local_copy(tmp_path):
    """HF_HUB_OFFLINE is read once, when huggingface_hub is imported (verified: setting it later
    in-process makes the hub retry the network for ~25 s), so run a fresh interpreter with the
    variable set and an empty cache, as a user on an offline machine would."""
    script = textwrap.dedent(
        """
        import torch
        from grounded_sam.errors import ModelLoadError
        from grounded_sam.sam.loading import load_sam_model

        for spec in ("someone-else/not-a-sam-model", "vit_b"):
            try:
                load_sam_model(spec, torch.device("cpu"), torch.float32)
            except ModelLoadError as exc:
                print("ERROR:", exc)
            else:
                print("LOADED:", spec)
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"), OMP_NUM_THREADS="1")
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr[-2000:]
    errors = [line for line in done.stdout.splitlines() if line.startswith("ERROR:")]
    assert len(errors) == 2, done.stdout + done.stderr[-2000:]
    for line, repo in zip(
        errors, ("someone-else/not-a-sam-model", "facebook/sam-vit-base"), strict=True
    ):
        assert repo in line  # names the id (the alias resolved)
        assert f"hf download {repo} --local-dir DIR" in line  # how to get a local copy
        assert "sam='DIR'" in line  # and how to use it


# -- real weights (skipped unless present) ---------------------------------------------------

REAL_SAM_ENV = "GROUNDED_SAM_TEST_SAM"


def _real_sam_spec() -> str:
    """A real SAM checkpoint: $GROUNDED_SAM_TEST_SAM (hub id or folder), else the default
    checkpoint when it is already in the local Hugging Face cache; skips otherwise (no
    download attempt, so the test skips in seconds on an offline machine)."""
    spec = os.environ.get(REAL_SAM_ENV)
    if spec:
        return spec
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(DEFAULT_SAM, "config.json"), str):
        return DEFAULT_SAM
    pytest.skip(
        f"no real SAM weights: set {REAL_SAM_ENV}=<hub id or folder> or cache {DEFAULT_SAM}"
    )


@pytest.mark.slow
def test_real_weights_load_and_match_reference():
    pytest.importorskip("segment_anything")
    from segment_anything import SamPredictor as MetaSamPredictor

    from grounded_sam.sam.predictor import SamPredictor

    from .reference import meta_sam_from_hf

    try:
        model = load_sam_model(_real_sam_spec(), CPU, torch.float32)
    except ModelLoadError as exc:
        pytest.skip(f"real SAM weights could not be loaded: {exc}")
    ours = SamPredictor(model)
    meta = MetaSamPredictor(meta_sam_from_hf(model, match_layer_norm_eps=False))
    image = shapes_image(300, 170)
    embedding = ours.encode(image)
    meta.set_image(image)
    vision = model.config.vision_config
    side = vision.image_size // vision.patch_size  # 64 for the released checkpoints
    assert embedding.embeddings.shape == (1, vision.output_channels, side, side)
    # ViT-B/L/H in float32: a deeper network than the tiny one, so a looser bound
    torch.testing.assert_close(embedding.embeddings, meta.features, rtol=1e-3, atol=1e-3)
    point = np.array([[100.0, 200.0]])
    pred = ours.predict(embedding, points=point, labels=[1])
    ref_masks, ref_iou, _ = meta.predict(point, np.array([1]))
    assert 0 < ref_masks.mean() < 1
    np.testing.assert_allclose(pred.iou_predictions, ref_iou, atol=1e-2)
    for a, b in zip(pred.masks, ref_masks, strict=True):
        assert np.logical_and(a, b).sum() / max(np.logical_or(a, b).sum(), 1) >= 0.98


# -- hostile folders (issue 23) ----------------------------------------------------------------


def _denying_open(monkeypatch, denied: Path) -> None:
    """Simulate a file without read permission (the tests may run as root, who reads anything):
    ``os.open`` of ``denied`` fails as it would for another user."""
    real_open = os.open

    def denying(path, flags, *args, **kwargs):
        if Path(path) == denied:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", denying)


@pytest.mark.parametrize("name", ["model.safetensors", "config.json"])
def test_unreadable_files_say_permission_denied(tmp_path, sam_model_dir, monkeypatch, name):
    # Unreadable weights said "No such file" (transformers' lookup failing on them).
    folder = tmp_path / "sam"
    shutil.copytree(sam_model_dir, folder)
    _denying_open(monkeypatch, folder / name)
    with pytest.raises(ModelLoadError, match="permission denied reading .*chmod a\\+r") as info:
        load_sam_model(folder, CPU, torch.float32)
    assert name in str(info.value) and "No such file" not in str(info.value)


def test_fifo_weights_are_refused_without_blocking(tmp_path, sam_model_dir):
    folder = tmp_path / "sam"
    folder.mkdir()
    shutil.copy(sam_model_dir / "config.json", folder)
    os.mkfifo(folder / "model.safetensors")  # opening it for reading would block forever
    with pytest.raises(ModelLoadError, match="not a regular file"):
        load_sam_model(folder, CPU, torch.float32)


def test_unreadable_shard_of_a_sharded_checkpoint(tmp_path, sam_model_dir, monkeypatch):
    import json

    folder = tmp_path / "sharded"
    folder.mkdir()
    shutil.copy(sam_model_dir / "config.json", folder)
    shard = "model-00001-of-00001.safetensors"
    shutil.copy(sam_model_dir / "model.safetensors", folder / shard)
    from safetensors import safe_open

    with safe_open(str(folder / shard), "pt") as f:
        weight_map = dict.fromkeys(f.keys(), shard)
    index = {"metadata": {}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index), encoding="utf-8")
    assert isinstance(load_sam_model(folder, CPU, torch.float32), torch.nn.Module)
    _denying_open(monkeypatch, folder / shard)
    with pytest.raises(ModelLoadError, match=f"its shard {shard}.*permission denied reading"):
        load_sam_model(folder, CPU, torch.float32)


class _Payload:
    """Pickles as a call to ``print``: what a malicious checkpoint would smuggle in."""

    def __reduce__(self):
        return (print, ("unpickled: code ran",))


def pickle_checkpoint(sam_model_dir: Path, folder: Path, *, hostile: bool) -> Path:
    """A copy of the tiny SAM with its weights as ``pytorch_model.bin`` (no safetensors)."""
    from safetensors.torch import load_file

    folder.mkdir(parents=True)
    shutil.copy(sam_model_dir / "config.json", folder)
    state: dict = load_file(sam_model_dir / "model.safetensors")
    if hostile:
        state["payload"] = _Payload()
    torch.save(state, folder / "pytorch_model.bin")
    return folder


def test_pickle_checkpoint_is_refused_with_the_conversion(tmp_path, sam_model_dir, capsys):
    folder = pickle_checkpoint(sam_model_dir, tmp_path / "pickled", hostile=True)
    with pytest.raises(ModelLoadError, match="pickle checkpoint that cannot be loaded safely"):
        load_sam_model(folder, CPU, torch.float32)
    message = str(pytest.raises(ModelLoadError, load_sam_model, folder, CPU, torch.float32).value)
    assert "safetensors" in message and str(folder / "model.safetensors") in message
    assert "code ran" not in capsys.readouterr().out  # never unpickled


def test_plain_pickle_state_dict_still_loads(tmp_path, sam_model_dir):
    # Tensors only: torch's weights_only loader reads it safely, so it is not refused.
    folder = pickle_checkpoint(sam_model_dir, tmp_path / "plain", hostile=False)
    model = load_sam_model(folder, CPU, torch.float32)
    assert type(model).__name__ == "SamModel"
