"""Text side of CLIP: prompt templates averaged per phrase, cached per phrase.

Thread safety: a :class:`TextEncoder` (and so one ``ClipScorer``) may be shared by threads.
Its phrase cache is an LRU bounded by entries (:data:`DEFAULT_MAX_CACHED_PHRASES` unless set)
whose every access takes its lock; encoding runs outside the lock, so two threads that miss
the same phrase at once may both encode it (identically) and one copy is kept. The
truncation check (below) is idempotent: racing threads set the same verdict.

CLIP text towers with a causal attention mask read the end-of-text token, and no position
attends to a later one, so running the tower on the tokens up to the longest prompt's end
(instead of the 77-token context) gives the same embeddings at a fraction of the cost. That is
verified once per model on its first batch (full-length and truncated forwards compared); a
model where it does not hold (no causal mask, pooling at another position, another tower
layout) keeps the full length.
"""

from __future__ import annotations

import copy
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F

__all__ = [
    "DEFAULT_MAX_CACHED_PHRASES",
    "DEFAULT_TEMPLATES",
    "TextEncoder",
    "check_templates",
    "fill_template",
]

logger = logging.getLogger(__name__)

#: CLIP ImageNet-style prompt templates (a short, object-centric subset); ``{}`` is the phrase.
DEFAULT_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a photo of the {}.",
    "a cropped photo of a {}.",
    "a close-up photo of a {}.",
    "a photo of a small {}.",
    "a photo of a large {}.",
    "a bright photo of a {}.",
    "a dark photo of a {}.",
    "a blurry photo of a {}.",
    "a good photo of a {}.",
    "itap of a {}.",
    "there is a {} in the scene.",
)

_ARTICLES = ("a ", "an ", "the ")

#: Phrase embeddings a :class:`TextEncoder` keeps (about 8 MiB at 512-d float32; labeling runs
#: with thousands of class names still hit).
DEFAULT_MAX_CACHED_PHRASES = 4096


def check_templates(templates: Sequence[str] | None) -> tuple[str, ...]:
    """Validate prompt templates.

    Args:
        templates: Strings with exactly one ``{}`` placeholder, or None for
            :data:`DEFAULT_TEMPLATES`.

    Returns:
        The templates as a tuple.

    Raises:
        ValueError: Empty list, a non-string, or a template without exactly one ``{}``.
    """
    if templates is None:
        return DEFAULT_TEMPLATES
    if isinstance(templates, str):
        templates = [templates]
    result = tuple(templates)
    if not result:
        raise ValueError("templates must contain at least one template such as 'a photo of a {}.'")
    for template in result:
        if not isinstance(template, str) or template.count("{}") != 1:
            raise ValueError(
                f"Invalid prompt template {template!r}: each template needs exactly one '{{}}' "
                "placeholder for the phrase, e.g. 'a photo of a {}.'"
            )
    return result


def fill_template(template: str, phrase: str) -> str:
    """Put a phrase into a template, dropping the phrase's leading article.

    The templates already carry an article ("a photo of a {}."), so "the red car" becomes
    "a photo of a red car." rather than "a photo of a the red car.".

    Args:
        template: A template with one ``{}``.
        phrase: The (stripped) phrase.

    Returns:
        The prompt text.
    """
    lowered = phrase.lower()
    for article in _ARTICLES:
        if lowered.startswith(article) and len(phrase) > len(article):
            phrase = phrase[len(article) :].lstrip()
            break
    return template.replace("{}", phrase)


class TextEncoder:
    """Encodes phrases with an open_clip text tower, template-averaged and cached per phrase.

    Each phrase is put into every template, the template embeddings are L2-normalised,
    averaged, and normalised again (the CLIP zero-shot classifier recipe). Results are cached
    in an LRU keyed by the stripped phrase, so a phrase seen before costs no forward pass;
    beyond ``max_cached`` phrases the least recently used one is forgotten.

    Args:
        model: An open_clip model (anything with ``encode_text(tokens) -> (B, D)``).
        tokenizer: The model's open_clip tokenizer (``list[str] -> (B, context_length)`` long).
        templates: Prompt templates (see :func:`check_templates`); None for the defaults.
        device: Device of the model.
        batch_size: Most prompts (phrases x templates) per text forward.
        max_cached: Most phrase embeddings kept (>= 1).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Callable[[list[str]], torch.Tensor],
        templates: Sequence[str] | None,
        device: torch.device,
        batch_size: int = 256,
        max_cached: int = DEFAULT_MAX_CACHED_PHRASES,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        if isinstance(max_cached, bool) or not isinstance(max_cached, int) or max_cached < 1:
            raise ValueError(f"max_cached must be a positive integer, got {max_cached!r}.")
        self.model = model
        self.tokenizer = tokenizer
        self.templates = check_templates(templates)
        self.device = device
        self.batch_size = int(batch_size)
        self.max_cached = max_cached
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()  # least recent first
        self._lock = threading.Lock()
        # None: not verified yet; True/False: truncation to the prompt length holds / not
        self.truncate: bool | None = None if _truncatable(model) else False

    @property
    def cached_phrases(self) -> list[str]:
        """Phrases whose embeddings are cached, least recently used first."""
        with self._lock:
            return list(self._cache)

    def clear_cache(self) -> None:
        """Forget all cached phrase embeddings."""
        with self._lock:
            self._cache.clear()

    def encode(self, phrases: Sequence[str]) -> torch.Tensor:
        """Embed phrases.

        Args:
            phrases: ``P`` non-empty strings (a single string counts as one phrase).

        Returns:
            ``(P, D)`` float32 L2-normalised embeddings on the model's device, in input order.

        Raises:
            ValueError: A phrase is empty or not a string.
        """
        if isinstance(phrases, str):
            phrases = [phrases]
        keys: list[str] = []
        for phrase in phrases:
            if not isinstance(phrase, str) or not phrase.strip():
                raise ValueError(f"Phrases must be non-empty strings, got {phrase!r}.")
            keys.append(phrase.strip())
        found: dict[str, torch.Tensor] = {}
        with self._lock:
            for key in dict.fromkeys(keys):
                if key in self._cache:
                    self._cache.move_to_end(key)
                    found[key] = self._cache[key]
            dim = next(iter(self._cache.values())).shape[-1] if self._cache else 0
        missing = [k for k in dict.fromkeys(keys) if k not in found]
        if missing:
            found.update(self._encode_missing(missing))
        if not keys:
            return torch.empty((0, dim), dtype=torch.float32, device=self.device)
        return torch.stack([found[k] for k in keys])

    @torch.no_grad()
    def _encode_missing(self, phrases: list[str]) -> dict[str, torch.Tensor]:
        """Encode phrases and cache them (evicting the least recently used beyond the bound)."""
        n_templates = len(self.templates)
        prompts = [fill_template(t, p) for p in phrases for t in self.templates]
        tokens = self.tokenizer(prompts)  # one batched tokenizer call
        chunks = []
        for start in range(0, tokens.shape[0], self.batch_size):
            chunk = tokens[start : start + self.batch_size].to(self.device)
            chunks.append(self._forward(chunk))
        per_template = torch.cat(chunks).view(len(phrases), n_templates, -1)
        embeddings = F.normalize(per_template.mean(dim=1), dim=-1)
        out = dict(zip(phrases, embeddings, strict=True))
        with self._lock:
            for phrase, embedding in out.items():
                self._cache[phrase] = embedding
                self._cache.move_to_end(phrase)
            while len(self._cache) > self.max_cached:
                self._cache.popitem(last=False)
        logger.debug("Encoded %d phrase(s) x %d template(s)", len(phrases), n_templates)
        return out

    def _forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, context) tokens -> (B, D) float32 L2-normalised embeddings."""
        if self.truncate is False:
            return F.normalize(self.model.encode_text(tokens).float(), dim=-1)
        short = F.normalize(_encode_truncated(self.model, tokens).float(), dim=-1)
        if self.truncate is None:
            # Verified in float32 (on a float32 copy of the text tower for half-precision
            # models): the property is structural, and bfloat16 rounding alone differs by
            # ~1e-2 between any two summation orders.
            ref = self.model
            if _dtype(self.model) != torch.float32:
                ref = _float_text_tower(self.model)
            with torch.no_grad():
                full = F.normalize(_encode_truncated(ref, tokens, full=True).float(), dim=-1)
                cut = F.normalize(_encode_truncated(ref, tokens).float(), dim=-1)
            diff = float((cut - full).abs().max())
            tol = 1e-4  # float32 rounding only (measured ~2e-7 at ViT-B-16 size)
            self.truncate = diff <= tol
            logger.info(
                "CLIP text tower at the prompt length: max |delta| %.2g vs the full context "
                "(tolerance %g): %s",
                diff,
                tol,
                "truncating" if self.truncate else "keeping the full length",
            )
            if not self.truncate:
                return F.normalize(self.model.encode_text(tokens).float(), dim=-1)
        return short


def _dtype(model: torch.nn.Module) -> torch.dtype:
    return next(model.parameters()).dtype


def _truncatable(model: torch.nn.Module) -> bool:
    """Whether the model has the structure truncation relies on (the result is still verified).

    That is open_clip ``CLIP``'s text tower layout, a causal mask and pooling at the end-of-
    text token.
    """
    names = ("token_embedding", "positional_embedding", "transformer", "ln_final", "attn_mask")
    return (
        all(hasattr(model, n) for n in names)
        and getattr(model, "attn_mask", None) is not None
        and getattr(model, "text_pool_type", None) in ("argmax", "eos")
    )


def _float_text_tower(model: torch.nn.Module) -> SimpleNamespace:
    """A float32 copy of an open_clip ``CLIP``'s text tower (for the truncation check)."""
    projection = model.text_projection
    if isinstance(projection, torch.nn.Module):
        projection = copy.deepcopy(projection).float()
    elif projection is not None:
        projection = projection.detach().float()
    return SimpleNamespace(
        token_embedding=copy.deepcopy(model.token_embedding).float(),
        positional_embedding=model.positional_embedding.detach().float(),
        transformer=copy.deepcopy(model.transformer).float(),
        ln_final=copy.deepcopy(model.ln_final).float(),
        attn_mask=model.attn_mask,
        text_pool_type=model.text_pool_type,
        text_eos_id=getattr(model, "text_eos_id", None),
        text_projection=projection,
    )


def _encode_truncated(model: Any, tokens: torch.Tensor, full: bool = False) -> torch.Tensor:
    """open_clip ``CLIP.encode_text`` on the tokens up to the last non-padding one.

    Args:
        model: An open_clip ``CLIP`` (see :func:`_truncatable`) or :func:`_float_text_tower`.
        tokens: (B, context) long, padding 0.
        full: Run the whole context instead (open_clip's own computation).

    Returns:
        (B, D) unnormalised text embeddings.
    """
    from open_clip.transformer import text_global_pool

    positions = torch.arange(1, tokens.shape[1] + 1, device=tokens.device)
    length = int(((tokens != 0) * positions).amax())  # one host sync per batch, not per prompt
    length = tokens.shape[1] if full else max(length, 1)
    text = tokens[:, :length]
    cast = model.transformer.get_cast_dtype()
    x = model.token_embedding(text).to(cast) + model.positional_embedding[:length].to(cast)
    x = model.transformer(x, attn_mask=model.attn_mask[:length, :length])
    x = model.ln_final(x)
    eos = getattr(model, "text_eos_id", None)
    x = text_global_pool(x, text, model.text_pool_type, eos_token_id=eos)
    projection = model.text_projection
    if projection is not None:
        x = projection(x) if isinstance(projection, torch.nn.Linear) else x @ projection
    return x
