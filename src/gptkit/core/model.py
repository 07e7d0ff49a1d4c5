"""GPTModel: the book's GPT-2 architecture (chapter 4), with fused attention and a
key/value cache.

Parameter names and creation order are the book's (``tok_emb``, ``pos_emb``,
``trf_blocks.{i}.att.W_query`` ...), and every layer keeps PyTorch's default
initialisation, so ``torch.manual_seed(123); GPTModel(cfg)`` gives the book's
weights. Attention runs through ``scaled_dot_product_attention`` (a fused kernel
where the device has one) instead of an explicit mask + softmax; GELU is the
tanh approximation GPT-2 uses (Hendrycks & Gimpel, 2016).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gptkit.core.config import GPTConfig

#: Attention mask marker: plain causal attention over the tokens of this call.
CAUSAL = "causal"


@dataclass
class KVCache:
    """Preallocated keys and values of every layer.

    ``keys``/``values``: (n_layers, batch, n_heads, max_len, head_dim). ``length``
    is how many positions are filled; a forward pass with the cache appends its
    tokens at ``length`` and advances it.
    """

    keys: Tensor
    values: Tensor
    length: int = 0

    @classmethod
    def allocate(
        cls,
        cfg: GPTConfig,
        batch_size: int,
        max_len: int,
        device: torch.device | str,
        dtype: torch.dtype,
    ) -> KVCache:
        shape = (cfg.n_layers, batch_size, cfg.n_heads, max_len, cfg.head_dim)
        return cls(
            torch.empty(shape, device=device, dtype=dtype),
            torch.empty(shape, device=device, dtype=dtype),
        )

    @property
    def capacity(self) -> int:
        return self.keys.shape[3]

    def reorder(self, index: Tensor) -> None:
        """Select batch rows (beam search): row i becomes old row ``index[i]``."""
        filled = slice(0, self.length)
        self.keys[:, :, :, filled] = self.keys[:, index, :, filled]
        self.values[:, :, :, filled] = self.values[:, index, :, filled]


class LayerNorm(nn.Module):
    """Layer normalisation with the book's parameter names (``scale``, ``shift``)."""

    def __init__(self, emb_dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.scale = nn.Parameter(torch.ones(emb_dim))
        self.shift = nn.Parameter(torch.zeros(emb_dim))

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, self.scale.shape, self.scale, self.shift, self.eps)


class GELU(nn.Module):
    """GELU, tanh approximation (as GPT-2 and the book)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(x, approximate="tanh")


class FeedForward(nn.Module):
    """Position-wise MLP: emb -> 4*emb -> GELU -> emb."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(cfg.emb_dim, 4 * cfg.emb_dim),
            GELU(),
            nn.Linear(4 * cfg.emb_dim, cfg.emb_dim),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class MultiHeadAttention(nn.Module):
    """Causal multi-head self-attention with separate query/key/value projections."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        d = cfg.emb_dim
        self.n_heads = cfg.n_heads
        self.head_dim = cfg.head_dim
        self.drop_rate = cfg.drop_rate
        self.W_query = nn.Linear(d, d, bias=cfg.qkv_bias)
        self.W_key = nn.Linear(d, d, bias=cfg.qkv_bias)
        self.W_value = nn.Linear(d, d, bias=cfg.qkv_bias)
        self.out_proj = nn.Linear(d, d)

    def _heads(self, x: Tensor) -> Tensor:
        b, t, _ = x.shape
        # (B, T, D) -> (B, T, H, hd) -> (B, H, T, hd)
        return x.view(b, t, self.n_heads, self.head_dim).transpose(1, 2)

    def forward(
        self,
        x: Tensor,
        mask: Tensor | str | None = CAUSAL,
        cache: KVCache | None = None,
        layer: int = 0,
    ) -> Tensor:
        b, t, d = x.shape
        q = self._heads(self.W_query(x))
        k = self._heads(self.W_key(x))
        v = self._heads(self.W_value(x))
        if cache is not None:
            start = cache.length
            cache.keys[layer, :, :, start : start + t] = k
            cache.values[layer, :, :, start : start + t] = v
            k = cache.keys[layer, :, :, : start + t]
            v = cache.values[layer, :, :, : start + t]
        dropout = self.drop_rate if self.training else 0.0
        if isinstance(mask, str):  # CAUSAL: the fused kernels' fast path
            out = F.scaled_dot_product_attention(
                q, k, v, dropout_p=dropout, is_causal=True
            )
        else:  # an explicit mask, or None: one new token attends to everything
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=dropout
            )
        # (B, H, T, hd) -> (B, T, H, hd) -> (B, T, D)
        out = out.transpose(1, 2).reshape(b, t, d)
        return self.out_proj(out)


class TransformerBlock(nn.Module):
    """Pre-LayerNorm transformer block: attention and MLP, each with a shortcut."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.att = MultiHeadAttention(cfg)
        self.ff = FeedForward(cfg)
        self.norm1 = LayerNorm(cfg.emb_dim, cfg.layer_norm_eps)
        self.norm2 = LayerNorm(cfg.emb_dim, cfg.layer_norm_eps)
        self.drop_shortcut = nn.Dropout(cfg.drop_rate)

    def forward(
        self, x: Tensor, mask: Tensor | str | None, cache: KVCache | None, layer: int
    ) -> Tensor:
        x = x + self.drop_shortcut(self.att(self.norm1(x), mask, cache, layer))
        return x + self.drop_shortcut(self.ff(self.norm2(x)))


class GPTModel(nn.Module):
    """GPT-2-style decoder-only transformer returning next-token logits."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.emb_dim)
        self.pos_emb = nn.Embedding(cfg.context_length, cfg.emb_dim)
        self.drop_emb = nn.Dropout(cfg.drop_rate)
        self.trf_blocks = nn.Sequential(
            *[TransformerBlock(cfg) for _ in range(cfg.n_layers)]
        )
        self.final_norm = LayerNorm(cfg.emb_dim, cfg.layer_norm_eps)
        self.out_head = nn.Linear(cfg.emb_dim, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.out_head.weight = self.tok_emb.weight

    def forward(
        self,
        in_idx: Tensor,
        *,
        cache: KVCache | None = None,
        position_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
    ) -> Tensor:
        """Logits (B, T, vocab) for token ids ``in_idx`` (B, T).

        ``cache``: append these tokens to a :class:`KVCache` and attend to its
        prefix. ``attention_mask`` (B, cache.length + T) marks real tokens (True)
        against left padding; ``position_ids`` (B, T) default to consecutive
        positions after the cached prefix.
        """
        t = in_idx.shape[1]
        start = cache.length if cache is not None else 0
        if cache is not None and start + t > cache.capacity:
            raise ValueError(
                f"KV cache holds {cache.capacity} positions; {start + t} needed"
            )
        if position_ids is None:
            position_ids = torch.arange(start, start + t, device=in_idx.device)
        x = self.tok_emb(in_idx) + self.pos_emb(position_ids)
        x = self.drop_emb(x)
        mask: Tensor | str | None
        if attention_mask is not None:
            mask = _attention_mask(start, t, attention_mask, in_idx.device)
        elif start == 0:
            mask = CAUSAL
        elif t == 1:
            mask = None  # a single new token sees the whole cached prefix
        else:
            mask = _attention_mask(start, t, None, in_idx.device)
        for layer, block in enumerate(self.trf_blocks):
            x = block(x, mask, cache, layer)
        if cache is not None:
            cache.length = start + t
        return self.out_head(self.final_norm(x))


def _attention_mask(
    start: int, t: int, key_mask: Tensor | None, device: torch.device
) -> Tensor:
    """Boolean mask (B or 1, 1, T, start+T): query i sees key j when j <= start+i
    and key j is a real token. Each query also sees itself, so rows of padding
    never become all-masked (which would turn them into NaN)."""
    total = start + t
    query_pos = torch.arange(start, total, device=device)[:, None]
    key_pos = torch.arange(total, device=device)[None, :]
    causal = key_pos <= query_pos  # (T, S)
    if key_mask is None:
        return causal[None, None]
    allowed = causal[None] & key_mask[:, None, :].bool()  # (B, T, S)
    allowed |= key_pos == query_pos
    return allowed[:, None]
