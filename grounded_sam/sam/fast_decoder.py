"""SAM's mask decoder for many prompts on one image: image-side work done once.

Same weights and the same function as transformers' ``SamMaskDecoder`` (and so Meta's
``MaskDecoder``; HQ-SAM's and SAM 2's decoders too, see the end of this docstring); the
arithmetic is re-ordered so that B prompts on one image embedding cost much less than B
independent decoder runs:

* **Shared image side.** Without a mask input, the dense prompt embedding is the same learned
  vector for every prompt, so the decoder's image tokens enter layer 0 identical for all B
  prompts. Their key/value projections (token->image attention) and query projection
  (image->token attention) are computed once per image and kept (:class:`SharedImage`);
  the B copies of the (C, E, E) embedding are never made for them.
* **Absorbed projections.** Every attention between the E*E image tokens and the T prompt
  tokens has only T (or h*T, with h heads) vectors on one side. Its image-side projection
  ``x @ W.T`` (E*E x C x C_internal multiply-adds per prompt) is folded into the token side
  instead: ``q . (W_k x) = (W_k.T q) . x`` and ``sum w (W_v x) = W_v (sum w x)``, so the
  image tokens are multiplied by h*T vectors instead of C_internal. With SAM's 8 heads and
  T = 7 tokens (a point, or a box) that is 56 against 128: 2.3x fewer multiply-adds. Both
  forms are implemented; the cheaper one is chosen per call from h, T and C_internal.
* **Rank-h*T update.** In layer 0 the image->token attention adds to every image token a
  convex combination (per head) of T token values passed through ``out_proj``: ``w @ U``
  with ``U = (W_o v)`` of shape (h*T, C) per prompt, never the (E*E, C_internal) attention
  output followed by a full ``out_proj``.
* **Upscaling as matrix products.** The 2x2 stride-2 transposed convolutions are per-pixel
  linear maps; they are run as matrix products in a block layout (no pixel shuffle of the
  wide tensors), and only the mask tokens that are returned (3 with multimask output, else
  1) go through the hypernetwork product; the interleave to (L, L) happens on those masks.

What was checked on paper and not used: carrying the image tokens after layer 0 as
"per-position scale x shared matrix + rank-r update" through LayerNorm (the issue's hint).
With h heads the update per attention is rank h*T, not T (57 with the bias for a point or
a box), so after two blocks r ~ 116; LayerNorm's per-position statistics then need an
(E*E x C x r) product per prompt and every later linear map an (E*E x r x C_out) one, which
costs as much as the absorbed direct products above (and more for the upscaling branch). So
layer 0's shared projections and the rank-h*T ``out_proj`` are where it pays.

Prompts with a mask input have a per-prompt dense embedding: they take the same code with a
per-prompt image side (no sharing), the "plain path".

**Other SAM families.** HQ-SAM and SAM 2 (transformers ``SamHQMaskDecoder`` /
``Sam2MaskDecoder``) have SAM's two-way transformer with other output tokens (HQ-SAM appends
an HQ token; SAM 2 prepends an object-score token), so everything above applies to them. Their
upscaling branches differ:

* SAM 2 adds two projected backbone levels (shared by all prompts) after each transposed
  convolution: they are rearranged once per image into the 2x2-block layout
  (:meth:`FastMaskDecoder.prepare_features`) and added there. Its single-mask output falls
  back to the best multimask output when the single mask is unstable, as the decoder does in
  eval mode.
* HQ-SAM's HQ mask runs two 3x3 convolutions over every prompt's (C/8, 4E, 4E) upscaled
  features. These are per prompt by construction and cannot be shared or absorbed; they are
  run channels-last, and they bound what the fast path gains for HQ-SAM (1.7x at 64
  prompts on a CPU, against 2.3x for SAM 2 and 2.5x for SAM; see ``benchmarks/RESULTS.md``).

Numerically the results equal transformers' up to float re-association (sums in a different
order): fp32 max |delta logit| ~1e-4 on a full-size random decoder (see
``tests/sam/test_fast_decoder.py``).
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

from grounded_sam.sam import families
from grounded_sam.sam.heads import DecoderHead, hq_features, stable_single_mask
from grounded_sam.sam.types import SharedImage

__all__ = ["FastMaskDecoder", "SharedImage", "hq_features", "stable_single_mask"]

logger = logging.getLogger(__name__)


def _heads(x: torch.Tensor, h: int) -> torch.Tensor:
    """(..., h*d) -> (..., h, d)."""
    return x.unflatten(-1, (h, x.shape[-1] // h))


def _out_proj(attn: torch.nn.Module) -> torch.nn.Module:
    """The attention's output projection (``out_proj`` in SAM / HQ-SAM, ``o_proj`` in SAM 2)."""
    proj = getattr(attn, "out_proj", None)
    return proj if proj is not None else attn.o_proj


def _softmax(x: torch.Tensor, dim: int) -> torch.Tensor:
    # transformers: softmax in float32, then back to the model dtype
    return F.softmax(x, dim=dim, dtype=torch.float32).to(x.dtype)


class FastMaskDecoder:
    """Decode B prompts on one image embedding with a transformers SAM-family mask decoder.

    See the module docstring for what is shared and why.

    Args:
        decoder: A ``transformers`` ``SamMaskDecoder``, ``SamHQMaskDecoder`` or
            ``Sam2MaskDecoder`` (eval mode).
        absorb: Force the absorbed (True) or the standard (False) image-side projections;
            None chooses the cheaper per call. For tests.
        hq_token_only: HQ-SAM: return only the HQ token's mask instead of SAM's mask + the
            HQ mask.
        head: The family's decoder head (:class:`~grounded_sam.sam.heads.DecoderHead`, from
            its registry record); None: the family recognised from the decoder's tokens
            (:func:`grounded_sam.sam.families.for_decoder`).

    Thread safety: a decoder holds no per-image state (the per-image work is the caller's
    :class:`~grounded_sam.sam.types.SharedImage` and extras), so one instance may decode for
    several threads at once; ``absorb`` and ``hq_token_only`` are settings, not to be changed
    while another thread decodes.
    """

    def __init__(
        self,
        decoder: torch.nn.Module,
        absorb: bool | None = None,
        hq_token_only: bool = False,
        head: DecoderHead | None = None,
    ) -> None:
        self.decoder = decoder
        self.absorb = absorb
        self.hq_token_only = hq_token_only
        # (weights key, the transposed convolutions as matrices): one tuple, swapped whole
        self._up: tuple[tuple, tuple[torch.Tensor, ...]] | None = None
        layers = decoder.transformer.layers
        if len(layers) == 0 or not layers[0].skip_first_layer_pe:
            raise ValueError("FastMaskDecoder expects SAM's two-way transformer layout.")
        self.head = head if head is not None else families.for_decoder(decoder).head

    @property
    def family(self) -> str:
        """Registry name of the decoder's family (``"sam"``, ``"sam_hq"``, ``"sam2"``)."""
        return self.head.name

    def prepare_features(
        self, image_embeddings: torch.Tensor, features: tuple[torch.Tensor, ...]
    ) -> tuple[torch.Tensor, ...]:
        """The family's per-image inputs to the upscaling branch, computed once per image.

        Args:
            image_embeddings: (1, C, E, E) image embedding.
            features: The embedding's extra encoder outputs: SAM 2's projected high-resolution
                levels ((1, C/8, 4E, 4E), (1, C/4, 2E, 2E)); HQ-SAM's early ViT features
                ((1, E, E, D),); nothing for SAM.

        Returns:
            SAM 2: (level 0 as (1, E*E, 16, C/8), level 1 as (1, E*E, 4, C/4)) in the 2x2
            block layout of :meth:`_upscale`; HQ-SAM: ((1, 4E, 4E, C/8) fused image + ViT
            features, channels last); SAM: () (see :mod:`grounded_sam.sam.heads`).
        """
        return self.head.prepare_features(self.decoder, image_embeddings, features)

    # -- shared image side -----------------------------------------------------------------

    def prepare(
        self, image_embeddings: torch.Tensor, image_pe: torch.Tensor, dense: torch.Tensor
    ) -> SharedImage:
        """Compute the prompt-independent part of layer 0 once.

        Args:
            image_embeddings: (1, C, E, E) image embedding.
            image_pe: (1, C, E, E) image-wide positional encoding.
            dense: (1, C, E, E) dense prompt embedding (the no-mask embedding).

        Returns:
            The shared work.
        """
        keys = (image_embeddings + dense).flatten(2).transpose(1, 2)  # (1, N, C)
        pe = image_pe.flatten(2).transpose(1, 2)
        layer = self.decoder.transformer.layers[0]
        t2i = layer.cross_attn_token_to_image
        i2t = layer.cross_attn_image_to_token
        h = t2i.num_attention_heads
        kp = keys + pe
        t2i_k = _heads(t2i.k_proj(kp)[0], h).transpose(0, 1).contiguous()
        t2i_v = _heads(t2i.v_proj(keys)[0], h).transpose(0, 1).contiguous()
        i2t_q = _heads(i2t.q_proj(kp)[0] * i2t.scaling, i2t.num_attention_heads)
        return SharedImage(
            keys=keys,
            pe=pe,
            t2i_k=t2i_k,
            t2i_v=t2i_v,
            i2t_q=i2t_q.transpose(0, 1).contiguous(),
        )

    # -- attention between image tokens and prompt tokens ---------------------------------

    def _use_absorb(self, attn: torch.nn.Module, tokens: int) -> bool:
        if self.absorb is not None:
            return self.absorb
        return attn.num_attention_heads * tokens < attn.internal_dim

    def _tokens_to_image(
        self,
        attn: torch.nn.Module,
        query: torch.Tensor,
        key_img: torch.Tensor,
        value_img: torch.Tensor,
    ) -> torch.Tensor:
        """Token->image attention, per-prompt image side.

        Args:
            attn: A ``SamAttention``.
            query: (B, T, C) token queries.
            key_img: (B, N, C) image keys (tokens + pe).
            value_img: (B, N, C) image values.

        Returns:
            (B, T, C) attention output (after ``out_proj``).
        """
        h = attn.num_attention_heads
        b, t, _ = query.shape
        q = _heads(attn.q_proj(query) * attn.scaling, h)  # (B, T, h, d)
        if self._use_absorb(attn, t):
            wk = _heads(attn.k_proj.weight.T, h)  # (C, h, d)
            # q . (Wk x + bk) = (Wk^T q) . x + const over the image tokens (cancels in softmax)
            qk = torch.einsum("bthd,chd->bhtc", q, wk).reshape(b, h * t, -1)
            w = _softmax(qk @ key_img.transpose(1, 2), -1)  # (B, h*T, N)
            agg = (w @ value_img).view(b, h, t, -1)  # (B, h, T, C)
            wv = _heads(attn.v_proj.weight.T, h)  # (C, h, d)
            out = torch.einsum("bhtc,chd->bthd", agg, wv).flatten(2) + attn.v_proj.bias
        else:
            k = _heads(attn.k_proj(key_img), h).transpose(1, 2)  # (B, h, N, d)
            v = _heads(attn.v_proj(value_img), h).transpose(1, 2)
            w = _softmax(q.transpose(1, 2) @ k.transpose(2, 3), -1)  # (B, h, T, N)
            out = (w @ v).transpose(1, 2).flatten(2)
        return _out_proj(attn)(out)

    def _tokens_to_shared_image(
        self, attn: torch.nn.Module, query: torch.Tensor, k: torch.Tensor, v: torch.Tensor
    ) -> torch.Tensor:
        """Token->image attention against shared per-head keys/values (h, N, d)."""
        h = attn.num_attention_heads
        b, t, _ = query.shape
        q = _heads(attn.q_proj(query) * attn.scaling, h)  # (B, T, h, d)
        q = q.permute(2, 0, 1, 3).reshape(h, b * t, -1)  # (h, B*T, d)
        w = _softmax(q @ k.transpose(1, 2), -1)  # (h, B*T, N)
        out = (w @ v).view(h, b, t, -1).permute(1, 2, 0, 3).flatten(2)  # (B, T, h*d)
        return _out_proj(attn)(out)

    def _image_to_tokens(
        self,
        attn: torch.nn.Module,
        query_img: torch.Tensor | None,
        key: torch.Tensor,
        value: torch.Tensor,
        residual: torch.Tensor,
        shared_q: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Image->token attention added to the image tokens: ``residual + attn(...)``.

        Args:
            attn: A ``SamAttention``.
            query_img: (B, N, C) image queries (tokens + pe), or None with ``shared_q``.
            key: (B, T, C) token keys (tokens + their pe).
            value: (B, T, C) token values.
            residual: (B|1, N, C) image tokens the update is added to.
            shared_q: (h, N, d) scaled, projected image queries shared by all prompts.
        """
        h = attn.num_attention_heads
        b, t, _ = key.shape
        k = _heads(attn.k_proj(key), h)  # (B, T, h, d)
        v = _heads(attn.v_proj(value), h)
        # Logits are laid out (B, h, T, N) so that the softmax over the T tokens runs along
        # a non-innermost axis (a softmax over an innermost axis of 7 is slow on CPUs).
        if shared_q is not None:
            n = shared_q.shape[1]
            kk = k.permute(2, 0, 1, 3).reshape(h, b * t, -1)  # (h, B*T, d)
            logits = (kk @ shared_q.transpose(1, 2)).view(h, b, t, n).transpose(0, 1)
        elif self._use_absorb(attn, t):
            n = query_img.shape[1]
            wq = _heads(attn.q_proj.weight.T, h)  # (C, h, d)
            kq = torch.einsum("bthd,chd->bhtc", k, wq).reshape(b, h * t, -1) * attn.scaling
            bias = torch.einsum("bthd,hd->bht", k, _heads(attn.q_proj.bias, h)) * attn.scaling
            logits = (kq @ query_img.transpose(1, 2)).view(b, h, t, n) + bias[..., None]
        else:
            n = query_img.shape[1]
            q = _heads(attn.q_proj(query_img) * attn.scaling, h)  # (B, N, h, d)
            logits = torch.einsum("bnhd,bthd->bhtn", q, k)
        w = _softmax(logits.contiguous(), 2).view(b, h * t, n).transpose(1, 2)  # (B, N, h*T)
        proj = _out_proj(attn)
        wo = _heads(proj.weight, h)  # (C, h, d)
        u = torch.einsum("bthd,chd->bhtc", v, wo)  # (B, h, T, C)
        # each head's weights sum to 1 over T, so bias/h on every row adds the bias once
        u = (u + proj.bias / h).reshape(b, h * t, -1)
        # residual, out_proj and its bias in one pass over the (B, N, C) image tokens
        return torch.baddbmm(residual.expand(b, -1, -1), w, u)

    # -- the decoder -----------------------------------------------------------------------

    def __call__(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse: torch.Tensor | None,
        dense: torch.Tensor,
        multimask_output: bool,
        shared: SharedImage | None = None,
        upscale_chunk: int = 16,
        extras: tuple[torch.Tensor, ...] = (),
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode B prompts.

        Args:
            image_embeddings: (1, C, E, E) image embedding.
            image_pe: (1, C, E, E) image-wide positional encoding.
            sparse: (B, T', C) sparse prompt embeddings, or None (mask-only prompts).
            dense: (B, C, E, E) dense prompt embeddings (per-prompt mask inputs), or
                (1, C, E, E) shared by all prompts.
            multimask_output: Three masks per prompt (tokens 1..3) instead of one (token 0).
            shared: :meth:`prepare`'s result for this embedding and dense embedding: the
                image side of layer 0 is then shared by all prompts. None: the plain path,
                every prompt's image side computed on its own.
            upscale_chunk: Prompts per upscaling step (bounds the (4E)^2 x C/8 buffers).
            extras: :meth:`prepare_features`'s result for this image (SAM 2 and HQ-SAM).

        Returns:
            ``(masks (B, M, 4E, 4E), iou (B, M))`` logits and predicted IoUs, M = 3 or 1,
            in the family's conventions: HQ-SAM adds the HQ mask to SAM's (or returns only
            it, ``hq_token_only``); SAM 2's single output falls back to the best multimask
            output when the single mask is unstable, as its decoder does in eval mode.
        """
        dec = self.decoder
        batch = sparse.shape[0] if sparse is not None else dense.shape[0]
        tokens = self.head.output_tokens(dec)[None].expand(batch, -1, -1)
        if sparse is not None:
            tokens = torch.cat([tokens, sparse.to(tokens.dtype)], dim=1)
        tok_pe = tokens  # the prompt tokens' own "positional" embedding
        _, c, e, _ = image_embeddings.shape

        if shared is not None:
            keys, pe = shared.keys, shared.pe
        else:  # the plain path: a per-prompt image side (mask inputs)
            keys = (image_embeddings + dense).flatten(2).transpose(1, 2)  # (B|1, N, C)
            keys = keys.expand(batch, -1, -1)
            pe = image_pe.flatten(2).transpose(1, 2)

        queries = tokens
        kp = keys + pe  # image tokens + positional encoding, once per layer
        for i, layer in enumerate(dec.transformer.layers):
            # self-attention of the tokens (cheap: T x T)
            if layer.skip_first_layer_pe:
                q = queries[:, None]
                queries = layer.self_attn(query=q, key=q, value=q)[0][:, 0]
            else:
                q = (queries + tok_pe)[:, None]
                queries = queries + layer.self_attn(query=q, key=q, value=queries[:, None])[0][:, 0]
            queries = layer.layer_norm1(queries)
            # tokens -> image
            q = queries + tok_pe
            if i == 0 and shared is not None:
                attn = self._tokens_to_shared_image(
                    layer.cross_attn_token_to_image, q, shared.t2i_k, shared.t2i_v
                )
            else:
                attn = self._tokens_to_image(layer.cross_attn_token_to_image, q, kp, keys)
            queries = layer.layer_norm2(queries + attn)
            queries = layer.layer_norm3(queries + layer.mlp(queries))
            # image -> tokens: a rank-h*T update of every image token
            k = queries + tok_pe
            i2t = layer.cross_attn_image_to_token
            if i == 0 and shared is not None:
                keys = self._image_to_tokens(i2t, None, k, queries, keys, shared_q=shared.i2t_q)
            else:
                keys = self._image_to_tokens(i2t, kp, k, queries, keys)
            keys = layer.layer_norm4(keys)  # (B, N, C) from here on
            kp = keys + pe

        tr = dec.transformer
        attn = self._tokens_to_image(tr.final_attn_token_to_image, queries + tok_pe, kp, keys)
        queries = tr.layer_norm_final_attn(queries + attn)

        return self._predict(queries, keys, e, multimask_output, extras, upscale_chunk)

    def _predict(
        self,
        queries: torch.Tensor,
        keys: torch.Tensor,
        e: int,
        multimask_output: bool,
        extras: tuple[torch.Tensor, ...],
        chunk: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Heads after the transformer: IoU, hypernetworks, upscaling, mask selection.

        Args:
            queries: (B, T, C) output + prompt tokens after the transformer.
            keys: (B, N, C) image tokens after the transformer.
            e: E, the embedding side.
            multimask_output: See :meth:`__call__`.
            extras: See :meth:`__call__`.
            chunk: Prompts per upscaling step.

        Returns:
            ``(masks (B, M, 4E, 4E), iou (B, M))``.
        """
        dec = self.decoder
        batch = queries.shape[0]
        head = self.head
        iou = dec.iou_prediction_head(queries[:, head.iou_at])  # (B, 4)
        mask_tokens = queries[:, head.mask_at :]
        # SAM 2 in eval mode: a single mask falls back to the best of the three on instability
        dynamic = head.dynamic_single(dec, multimask_output)
        chosen = [1, 2, 3] if multimask_output else [0, 1, 2, 3] if dynamic else [0]
        hyper = torch.stack(
            [dec.output_hypernetworks_mlps[j](mask_tokens[:, j]) for j in chosen], dim=1
        )  # (B, M, C/8)
        hyper_hq = head.extra_hyper(dec, mask_tokens)  # HQ-SAM: (B, 1, C/8)
        masks = torch.cat(
            [
                self._upscale(
                    keys[s : s + chunk],
                    hyper[s : s + chunk],
                    e,
                    extras,
                    None if hyper_hq is None else hyper_hq[s : s + chunk],
                )
                for s in range(0, batch, chunk)
            ]
        )
        iou = iou[:, chosen]
        if dynamic:
            masks, iou = head.stable_single(dec, masks, iou)
        return masks, iou

    def _upscale_weights(self) -> tuple[torch.Tensor, ...]:
        """The transposed convolutions as linear maps to 2x2 blocks (cached per weights).

        ConvTranspose2d(k=2, s=2) with weight (C_in, C_out, 2, 2) maps x[i, j] to output
        pixels (2i+a, 2j+c) by ``W[:, :, a, c]``: one (4*C_out, C_in) matrix, rows (a, c, o).
        """
        dec = self.decoder
        conv1, conv2 = dec.upscale_conv1, dec.upscale_conv2
        key = (conv1.weight.data_ptr(), conv1.weight.dtype, conv1.weight.device,
               conv1.weight._version, conv2.weight._version)
        cached = self._up  # one read: another thread may swap in the same value meanwhile
        if cached is not None and cached[0] == key:
            return cached[1]
        w1 = conv1.weight.permute(2, 3, 1, 0).reshape(-1, conv1.in_channels).contiguous()
        w2 = conv2.weight.permute(2, 3, 1, 0).reshape(-1, conv2.in_channels).contiguous()
        weights = (w1, conv1.bias.repeat(4), w2, conv2.bias.repeat(4))
        self._up = (key, weights)
        return weights

    def _upscale(
        self,
        keys: torch.Tensor,
        hyper: torch.Tensor,
        e: int,
        extras: tuple[torch.Tensor, ...] = (),
        hyper_hq: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Upscaling branch + hypernetwork product in a 2x2-block layout.

        Args:
            keys: (b, N, C) image tokens after the transformer.
            hyper: (b, M, C/8) hypernetwork outputs of the returned mask tokens.
            e: E, the embedding side (N = E*E).
            extras: SAM 2's block-layout high-res features / HQ-SAM's fused features
                (:meth:`prepare_features`).
            hyper_hq: (b, 1, C/8) HQ token's hypernetwork output (HQ-SAM), else None.

        Returns:
            (b, M, 4E, 4E) mask logits.
        """
        dec = self.decoder
        b, n, c = keys.shape
        conv1, conv2, ln = dec.upscale_conv1, dec.upscale_conv2, dec.upscale_layer_norm
        c4, c8 = conv1.out_channels, conv2.out_channels
        w1, b1, w2, b2 = self._upscale_weights()
        x = F.linear(keys, w1, b1).view(b, n, 4, c4)
        x = self.head.add_level(x, extras, 1)  # SAM 2: + projected backbone level 1
        x = F.gelu(F.layer_norm(x, (c4,), ln.weight, ln.bias, ln.eps))
        x = F.linear(x, w2, b2).view(b, n, 16, c8)  # (b, N, (a, c, a2, c2), C/8)
        x = self.head.add_level(x, extras, 0)  # SAM 2: + projected backbone level 0
        x = F.gelu(x)
        m = hyper.shape[1]
        masks = x.view(b, n * 16, c8) @ hyper.transpose(1, 2)  # (b, N*16, M)
        masks = _blocks_to_image(masks.view(b, e, e, 2, 2, 2, 2, m))
        # HQ-SAM: + the HQ mask from 3x3 convolutions over the upscaled features
        return self.head.finish_masks(dec, x, masks, hyper_hq, extras, self.hq_token_only)


def _blocks_to_image(x: torch.Tensor) -> torch.Tensor:
    """(b, i, j, a, c, a2, c2, K) blocks -> (b, K, 4E, 4E), row 4i + 2a + a2, col 4j + 2c + c2."""
    b, e, k = x.shape[0], x.shape[1], x.shape[-1]
    return x.permute(0, 7, 1, 3, 5, 2, 4, 6).reshape(b, k, 4 * e, 4 * e)
