"""Text embeddings: templates averaged and normalised, cached per phrase, batched."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from grounded_sam.clip import DEFAULT_TEMPLATES, ClipScorer, TextEncoder, load_clip
from grounded_sam.clip.text import check_templates, fill_template


class CallCounter:
    """Wraps a callable and records the batch size of every call."""

    def __init__(self, fn):
        self.fn = fn
        self.sizes: list[int] = []

    def __call__(self, batch, *args, **kwargs):
        self.sizes.append(len(batch))
        return self.fn(batch, *args, **kwargs)


def test_templates_averaged_and_normalised(scorer: ClipScorer) -> None:
    scorer.clear_text_cache()
    phrases = ["dog", "the red car", "date, fig, hazelnut"]
    got = scorer.encode_text(phrases)
    assert got.shape == (3, scorer.embed_dim) and got.dtype == torch.float32
    torch.testing.assert_close(got.norm(dim=-1), torch.ones(3))
    with torch.no_grad():
        for row, phrase in zip(got, phrases, strict=True):
            prompts = [fill_template(t, phrase) for t in DEFAULT_TEMPLATES]
            per_template = F.normalize(scorer.model.encode_text(scorer.tokenizer(prompts)), dim=-1)
            expected = F.normalize(per_template.mean(0), dim=-1)
            torch.testing.assert_close(row, expected, atol=1e-5, rtol=1e-5)
            # averaging matters: the mean is not any single template's embedding
            assert (per_template @ row).min() < 0.99999


def test_second_call_runs_no_forward(scorer: ClipScorer, monkeypatch: pytest.MonkeyPatch) -> None:
    scorer.clear_text_cache()
    forward = CallCounter(scorer.text_encoder._forward)  # the text tower, any length
    tokenize = CallCounter(scorer.text_encoder.tokenizer)
    monkeypatch.setattr(scorer.text_encoder, "_forward", forward)
    monkeypatch.setattr(scorer.text_encoder, "tokenizer", tokenize)
    n_templates = len(scorer.templates)

    first = scorer.encode_text(["cat", "dog", "cat"])
    assert tokenize.sizes == [2 * n_templates]  # one batched tokenizer call, duplicates merged
    assert sum(forward.sizes) == 2 * n_templates
    torch.testing.assert_close(first[0], first[2])

    calls = len(forward.sizes)
    again = scorer.encode_text(["dog", " cat "])  # cached (phrases are stripped)
    assert len(forward.sizes) == calls and len(tokenize.sizes) == 1
    torch.testing.assert_close(again, first[[1, 0]])

    scorer.encode_text(["dog", "bird"])  # only the new phrase is encoded
    assert tokenize.sizes[-1] == n_templates and sum(forward.sizes) == 3 * n_templates
    assert scorer.text_encoder.cached_phrases == ["cat", "dog", "bird"]


def test_text_batching_invariance(scorer: ClipScorer) -> None:
    phrases = ["red", "green", "blue"]  # 36 prompts: chunks of 10, 10, 10, 6
    small = TextEncoder(scorer.model, scorer.tokenizer, None, scorer.device, batch_size=10)
    large = TextEncoder(scorer.model, scorer.tokenizer, None, scorer.device, batch_size=1000)
    torch.testing.assert_close(small.encode(phrases), large.encode(phrases), atol=1e-6, rtol=0)


def test_custom_templates(tiny_clip_path: Path, scorer: ClipScorer) -> None:
    single = load_clip(tiny_clip_path, device="cpu", templates=["a photo of a {}."])
    assert single.templates == ("a photo of a {}.",)
    with torch.no_grad():
        expected = F.normalize(scorer.model.encode_text(scorer.tokenizer(["a photo of a dog."])))
    torch.testing.assert_close(single.encode_text(["dog"]), expected, atol=1e-5, rtol=1e-5)
    assert (single.encode_text(["dog"]) @ scorer.encode_text(["dog"]).T).item() < 0.99999


@pytest.mark.parametrize(
    ("template", "phrase", "expected"),
    [
        ("a photo of a {}.", "dog", "a photo of a dog."),
        ("a photo of a {}.", "the red car", "a photo of a red car."),
        ("a photo of a {}.", "An apple", "a photo of a apple."),
        ("itap of a {}.", "a", "itap of a a."),  # a lone article is the phrase itself
        ("{}", "theatre", "theatre"),
    ],
)
def test_fill_template(template: str, phrase: str, expected: str) -> None:
    assert fill_template(template, phrase) == expected


@pytest.mark.parametrize("templates", [[], ["no placeholder"], ["{} and {}"], [3]])
def test_bad_templates(templates: list) -> None:
    with pytest.raises(ValueError):
        check_templates(templates)


def test_bad_and_empty_phrases(scorer: ClipScorer) -> None:
    for bad in (["dog", ""], ["  "], [None]):
        with pytest.raises(ValueError):
            scorer.encode_text(bad)  # type: ignore[arg-type]
    assert scorer.encode_text(["dog"]).shape == (1, 32)
    assert scorer.encode_text([]).shape == (0, 32)
    assert scorer.encode_text("dog").shape == (1, 32)  # a lone string is one phrase
    assert 8 <= len(DEFAULT_TEMPLATES) <= 16


# -- the text tower at the prompt length ----------------------------------------------------


def test_truncated_tower_equals_full_length(scorer: ClipScorer) -> None:
    enc = TextEncoder(scorer.model, scorer.tokenizer, None, scorer.device)
    assert enc.truncate is None  # verified on the first batch, not assumed
    long_phrase = " ".join(["very"] * 40) + " long dog"  # near the 77-token context
    phrases = ["dog", "traffic light", long_phrase]
    got = enc.encode(phrases)
    assert enc.truncate is True
    with torch.no_grad():
        for row, phrase in zip(got, phrases, strict=True):
            tokens = scorer.tokenizer([fill_template(t, phrase) for t in enc.templates])
            full = F.normalize(scorer.model.encode_text(tokens).float(), dim=-1)
            torch.testing.assert_close(row, F.normalize(full.mean(0), dim=-1), atol=1e-5, rtol=0)
    # the short prompts really are shorter than the context (the test is not vacuous)
    assert int((scorer.tokenizer(["a photo of a dog."]) != 0).sum()) < 20


def test_truncation_falls_back_when_it_does_not_hold(scorer: ClipScorer) -> None:
    import copy

    model = copy.deepcopy(scorer.model)
    model.attn_mask = torch.zeros_like(model.attn_mask)  # bidirectional: padding matters
    enc = TextEncoder(model, scorer.tokenizer, None, scorer.device)
    got = enc.encode(["dog", "red car"])
    assert enc.truncate is False
    with torch.no_grad():
        tokens = scorer.tokenizer([fill_template(t, "dog") for t in enc.templates])
        full = F.normalize(model.encode_text(tokens).float(), dim=-1)
    torch.testing.assert_close(got[0], F.normalize(full.mean(0), dim=-1), atol=1e-6, rtol=0)


def test_truncation_is_verified_in_float32_for_bfloat16_models(scorer: ClipScorer) -> None:
    """bfloat16 rounding alone moves embeddings by ~1e-2; the structural check must not
    mistake that for truncation not holding (and fall back to the slow full length)."""
    import copy

    model = copy.deepcopy(scorer.model).to(torch.bfloat16)
    enc = TextEncoder(model, scorer.tokenizer, None, scorer.device)
    got = enc.encode(["dog", "traffic light"])
    assert enc.truncate is True
    ref = TextEncoder(scorer.model, scorer.tokenizer, None, scorer.device).encode(["dog"])
    assert float(got[0] @ ref[0]) > 0.99  # bfloat16 close to float32


def test_new_phrases_one_batch_background_once(
    scorer: ClipScorer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """All templates of all new phrases go through the tower in one call; phrases seen before
    (the pipeline's background phrases) are not encoded again."""
    enc = TextEncoder(scorer.model, scorer.tokenizer, None, scorer.device)
    forward = CallCounter(enc._forward)
    monkeypatch.setattr(enc, "_forward", forward)
    background = ["object", "background", "stuff", "thing"]
    n = len(enc.templates)
    enc.encode(["dog", "cat", "bird"] + background)
    assert forward.sizes == [7 * n]
    enc.encode(["horse"] + background)
    assert forward.sizes == [7 * n, n]


def test_cache_is_a_bounded_lru_that_still_hits(scorer: ClipScorer, monkeypatch) -> None:
    enc = TextEncoder(scorer.model, scorer.tokenizer, None, scorer.device, max_cached=3)
    forward = CallCounter(enc._forward)
    monkeypatch.setattr(enc, "_forward", forward)
    n = len(enc.templates)
    ref = enc.encode(["a", "b", "c"])
    assert enc.cached_phrases == ["a", "b", "c"] and sum(forward.sizes) == 3 * n
    enc.encode(["a"])  # a hit: no forward, and "a" is now the most recent
    assert sum(forward.sizes) == 3 * n and enc.cached_phrases == ["b", "c", "a"]
    enc.encode(["d"])  # over the bound: the least recently used ("b") goes
    assert enc.cached_phrases == ["c", "a", "d"] and sum(forward.sizes) == 4 * n
    torch.testing.assert_close(enc.encode(["c", "a"]), ref[[2, 0]])  # still hits
    assert sum(forward.sizes) == 4 * n
    # one call with more phrases than the bound still answers all of them
    many = enc.encode(["e", "f", "g", "h", "a"])
    assert many.shape[0] == 5 and len(enc.cached_phrases) == 3
    torch.testing.assert_close(many[4], ref[0])
    enc.encode(["b"])
    assert sum(forward.sizes) == (4 + 4 + 1) * n  # "b" was forgotten, so it is encoded again


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_cache_bound_must_be_a_positive_integer(scorer: ClipScorer, bad) -> None:
    with pytest.raises(ValueError, match="max_cached must be a positive integer"):
        TextEncoder(scorer.model, scorer.tokenizer, None, scorer.device, max_cached=bad)


def test_threads_share_one_encoder(scorer: ClipScorer) -> None:
    from concurrent.futures import ThreadPoolExecutor

    enc = TextEncoder(scorer.model, scorer.tokenizer, None, scorer.device, max_cached=4)
    phrases = [["dog", "cat"], ["cat", "bird"], ["fish"], ["dog", "fish", "cow"]] * 3
    serial = [enc.encode(p) for p in phrases]
    enc.clear_cache()
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(enc.encode, phrases))
    for a, b in zip(serial, got, strict=True):
        torch.testing.assert_close(a, b)
    assert len(enc.cached_phrases) <= 4
