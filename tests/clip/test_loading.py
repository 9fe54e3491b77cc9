"""Loading CLIP specs: local dirs, spec parsing, and clear errors when offline or mistyped."""

from __future__ import annotations

import os
import time
import traceback
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch

from grounded_sam.clip import ClipScorer, load_clip, parse_clip_spec, save_tiny_clip
from grounded_sam.errors import ModelLoadError


def assert_no_chained_traceback(error: BaseException) -> None:
    """The user sees our message only, not open_clip's / huggingface_hub's stack."""
    assert error.__cause__ is None
    assert error.__context__ is None or error.__suppress_context__


def test_load_local_dir(tiny_clip_path: Path) -> None:
    scorer = load_clip(f"local-dir:{tiny_clip_path}", device="cpu")
    assert isinstance(scorer, ClipScorer)
    assert scorer.device == torch.device("cpu")
    assert scorer.dtype == torch.float32
    assert scorer.embed_dim == 32
    assert scorer.image_size == (64, 64)
    assert scorer.crop_style == "masked"
    assert scorer.spec == f"local-dir:{tiny_clip_path.resolve()}"
    assert scorer.logit_scale == pytest.approx(1 / 0.07, rel=1e-3)  # open_clip's init, fp16-saved
    assert scorer.logit_bias is None
    assert not scorer.model.training
    assert all(not p.requires_grad for p in scorer.model.parameters())
    assert scorer.mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))


def test_plain_directory_equals_local_dir(tiny_clip_path: Path, scorer: ClipScorer) -> None:
    for spec in (str(tiny_clip_path), tiny_clip_path):  # str path and os.PathLike
        other = load_clip(spec, device="cpu", crop_style="box")
        assert other.spec == scorer.spec
        assert other.crop_style == "box"
        torch.testing.assert_close(other.encode_text(["a dog"]), scorer.encode_text(["a dog"]))


def test_tiny_model_is_small_fast_and_deterministic(tmp_path: Path) -> None:
    start = time.perf_counter()
    first = save_tiny_clip(tmp_path / "a")
    assert time.perf_counter() - start < 2.0
    second = save_tiny_clip(tmp_path / "b")
    assert sorted(p.name for p in first.iterdir()) == [
        "open_clip_config.json",
        "open_clip_model.safetensors",
    ]
    weights = [d / "open_clip_model.safetensors" for d in (first, second)]
    assert weights[0].read_bytes() == weights[1].read_bytes()
    assert weights[0].stat().st_size < 5_000_000
    assert (save_tiny_clip(tmp_path / "c", seed=1) / weights[0].name).read_bytes() != (
        weights[0].read_bytes()
    )


@pytest.mark.parametrize(
    ("spec", "model_name", "pretrained", "quick_gelu"),
    [
        ("ViT-B-16:laion2b_s34b_b88k", "ViT-B-16", "laion2b_s34b_b88k", False),
        ("ViT-B-32:laion2b_s34b_b79k", "ViT-B-32", "laion2b_s34b_b79k", False),
        ("ViT-B-16", "ViT-B-16", "openai", True),  # bare name: openai weights, QuickGELU
        ("ViT-B/32:openai", "ViT-B-32", "openai", True),
        (
            " hf-hub:laion/CLIP-ViT-B-16-laion2B-s34B-b88K ",
            "hf-hub:laion/CLIP-ViT-B-16-laion2B-s34B-b88K",
            None,
            False,
        ),
    ],
)
def test_parse_spec(spec: str, model_name: str, pretrained: str | None, quick_gelu: bool) -> None:
    parsed = parse_clip_spec(spec)
    assert parsed.model_name == model_name
    assert parsed.pretrained == pretrained
    assert parsed.force_quick_gelu is quick_gelu


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ("ViT-B-16:no_such_tag", "laion2b_s34b_b88k"),  # lists the known tags
        ("ViT-B-61:openai", "ViT-B-16"),  # suggests close architecture names
        ("laion/CLIP-ViT-B-16-laion2B-s34B-b88K", "hf-hub:laion/CLIP-ViT-B-16"),
        ("hf-hub:not-a-repo-id", "hf-hub:org/repo"),
        ("local-dir:/no/such/dir", "does not exist"),
        ("", "empty"),
    ],
)
def test_bad_spec_raises_model_load_error(spec: str, needle: str) -> None:
    with pytest.raises(ModelLoadError) as info:
        load_clip(spec, device="cpu")
    message = str(info.value)
    assert repr(spec) in message
    assert needle in message
    assert "local-dir:/path/to/dir" in message
    assert_no_chained_traceback(info.value)


def test_incomplete_directories(tmp_path: Path, tiny_clip_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="no open_clip_config.json"):
        load_clip(f"local-dir:{tmp_path}", device="cpu")
    (tmp_path / "open_clip_config.json").write_bytes(
        (tiny_clip_path / "open_clip_config.json").read_bytes()
    )
    with pytest.raises(ModelLoadError, match="no weights file"):
        load_clip(str(tmp_path), device="cpu")


def test_broken_directory_contents(tmp_path: Path, tiny_clip_path: Path) -> None:
    (tmp_path / "open_clip_config.json").write_text("{not json", encoding="utf-8")
    (tmp_path / "open_clip_model.safetensors").write_bytes(
        (tiny_clip_path / "open_clip_model.safetensors").read_bytes()
    )
    with pytest.raises(ModelLoadError, match="Could not load CLIP model") as info:
        load_clip(tmp_path, device="cpu")
    assert "local-dir:/path/to/dir" in str(info.value)
    assert_no_chained_traceback(info.value)


def test_half_precision_on_cpu(tiny_clip_path: Path, scorer: ClipScorer) -> None:
    """bfloat16 goes through open_clip's mixed-precision mode; outputs stay float32."""
    half = load_clip(tiny_clip_path, device="cpu", dtype="bfloat16")
    assert half.dtype == torch.bfloat16
    assert half.model.visual.conv1.weight.dtype == torch.bfloat16
    text = half.encode_text(["a dog", "a cat"])
    assert text.dtype == torch.float32
    assert ((text * scorer.encode_text(["a dog", "a cat"])).sum(-1) > 0.99).all()
    image = torch.randint(0, 256, (3, 50, 70), dtype=torch.uint8)
    boxes = torch.tensor([[5.0, 5.0, 40.0, 30.0], [30.0, 10.0, 69.0, 49.0]])
    regions = half.encode_regions(image, boxes)
    assert regions.dtype == torch.float32
    assert ((regions * scorer.encode_regions(image, boxes)).sum(-1) > 0.99).all()


def test_bad_settings_fail_before_loading(tiny_clip_path: Path) -> None:
    with pytest.raises(ValueError, match="crop style"):
        load_clip("ViT-B-16:laion2b_s34b_b88k", crop_style="fuzzy")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="placeholder"):
        load_clip(tiny_clip_path, templates=["a photo"])


@pytest.fixture
def hub_offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """HF_HUB_OFFLINE=1 with an empty hub cache (huggingface_hub reads the env at import)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    return cache


@pytest.mark.parametrize(
    "spec",
    ["hf-hub:laion/CLIP-ViT-B-16-laion2B-s34B-b88K", "ViT-B-16:laion2b_s34b_b88k", "ViT-B-32"],
)
def test_offline_fails_fast_with_clear_message(hub_offline: Path, spec: str) -> None:
    start = time.perf_counter()
    with pytest.raises(ModelLoadError) as info:
        load_clip(spec, device="cpu", cache_dir=hub_offline)
    assert time.perf_counter() - start < 10.0
    message = str(info.value)
    assert repr(spec) in message
    assert "HF_HUB_OFFLINE" in message
    assert "not in the local Hugging Face cache" in message
    assert "local-dir:DIR" in message and "open_clip_model.safetensors" in message
    assert_no_chained_traceback(info.value)
    # What an uncaught error prints: our frames only, nothing from deep inside open_clip/hub.
    printed = "".join(traceback.format_exception(info.value))
    assert "open_clip" + os.sep not in printed and "huggingface_hub" + os.sep not in printed
    assert "During handling of the above exception" not in printed


@pytest.mark.parametrize(
    ("spec", "repo"),
    [
        ("ViT-B-16:laion2b_s34b_b88k", "laion/CLIP-ViT-B-16-laion2B-s34B-b88K"),
        ("hf-hub:someone/some-clip", "someone/some-clip"),
    ],
)
def test_offline_advice_names_the_download_command(spec, repo):
    """The message of a failed hub load gives the exact command for a local open_clip folder."""
    from grounded_sam.clip.loading import _download_advice, parse_clip_spec

    advice = _download_advice(parse_clip_spec(spec))
    assert f"`hf download {repo} --local-dir DIR`" in advice
    assert "--clip DIR" in advice
