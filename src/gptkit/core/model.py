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

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gptkit.core.config import GPTConfig
from gptkit.system import decode_attention

#: Attention mask marker: plain causal attention over the tokens of this call.
CAUSAL = "causal"


@dataclass
class KVCache:
    """Preallocated keys and values of every layer, one row per sequence.

    ``keys``/``values``: (n_layers, batch, capacity, n_heads, head_dim), each
    position's heads side by side, so that a decoding step's attention streams a
    row's cache as one run (:mod:`gptkit.system.decode_attention`); each layer is
    seen as (batch, n_heads, capacity, head_dim) views. Row ``b``
    keeps the token at position ``p`` in slot ``p``, and ``lengths[b]`` slots of it
    are filled, so rows advance independently: a forward pass with the cache
    places its ``T`` tokens at positions ``lengths[b] .. lengths[b] + T - 1`` of
    each row and attends to every slot up to each query's position. That is what
    batched prompts of different lengths (no left padding), continuous batching
    (a row prefilled on its own while the others decode, through :meth:`rows`),
    speculative decoding (:meth:`truncate` rolls rejected tokens back) and beam
    search (:meth:`reorder`) need.

    ``lengths`` is host-side bookkeeping (plain ints: no device sync per step). A
    ``static`` cache always attends over the whole capacity (a fixed shape, for
    ``torch.compile`` and CUDA graphs); otherwise attention reads the filled prefix.
    ``shared``: the first slots, which every row holds the same bits in (copies
    of one row's, as the cache's user declares: a prompt prefilled once, beam
    search's common history; :meth:`set_length` and :meth:`truncate` lower it):
    a decoding step may read them once for all rows.
    """

    keys: Tensor
    values: Tensor
    lengths: list[int] = field(default_factory=list)
    static: bool = False

    def __post_init__(self) -> None:
        if not self.lengths:
            self.lengths = [0] * self.keys.shape[1]
        self.shared = 0
        # each layer's (B, H, capacity, hd) views, made once
        pairs = zip(self.keys.unbind(0), self.values.unbind(0), strict=True)
        self._layers = [(k.transpose(1, 2), v.transpose(1, 2)) for k, v in pairs]

    @classmethod
    def allocate(
        cls,
        cfg: GPTConfig,
        batch_size: int,
        max_len: int,
        device: torch.device | str,
        dtype: torch.dtype,
        *,
        static: bool = False,
    ) -> KVCache:
        shape = (cfg.n_layers, batch_size, max_len, cfg.n_kv_heads, cfg.head_dim)
        # Zeros, not empty memory: a masked slot still enters attention as
        # 0 x value, and uninitialised NaNs there would poison the whole row.
        return cls(
            torch.zeros(shape, device=device, dtype=dtype),
            torch.zeros(shape, device=device, dtype=dtype),
            static=static,
        )

    @property
    def capacity(self) -> int:
        return self.keys.shape[2]

    @property
    def length(self) -> int:
        """The longest row's filled length."""
        return max(self.lengths)

    def positions(self, t: int, device: torch.device) -> Tensor:
        """Positions (B, t) of ``t`` new tokens in each row."""
        start = torch.tensor(self.lengths, device=device)
        return start[:, None] + torch.arange(t, device=device)

    def span(self, t: int) -> int:
        """Slots attention reads when ``t`` tokens are added."""
        return self.capacity if self.static else self.length + t

    def write(
        self, layer: int, k: Tensor, v: Tensor, positions: Tensor, span: int,
        start: int | None = None,
    ) -> tuple[Tensor, Tensor]:  # fmt: skip
        """Store ``k``/``v`` (B, H, T, hd) at ``positions`` (B, T) of each row
        (``start``: every row's are ``start ..``, a slice copy); return the
        layer's keys and values over the first ``span`` slots."""
        keys, values = self._layers[layer]
        if start is not None:
            keys.narrow(2, start, k.shape[2]).copy_(k)
            values.narrow(2, start, k.shape[2]).copy_(v)
        else:
            rows = torch.arange(k.shape[0], device=k.device)[:, None]  # (B, 1)
            # (B, H, T, hd) -> (B, T, H, hd): keys[rows, :, positions]'s layout
            keys[rows, :, positions] = k.transpose(1, 2)
            values[rows, :, positions] = v.transpose(1, 2)
        return keys.narrow(2, 0, span), values.narrow(2, 0, span)

    def advance(self, t: int) -> None:
        self.lengths = [n + t for n in self.lengths]

    def rows(self, index: int | slice) -> KVCache:
        """A cache on some rows that shares this one's storage (prefill one
        request's row while the others wait); copy its ``lengths`` back with
        :meth:`set_length`."""
        if isinstance(index, int):
            index = slice(index, index + 1)
        return KVCache(
            self.keys[:, index],
            self.values[:, index],
            self.lengths[index],
            self.static,
        )

    def set_length(self, row: int, length: int) -> None:
        if not 0 <= length <= self.capacity:
            raise ValueError(f"length {length} outside the cache's {self.capacity}")
        self.lengths[row] = length
        self.shared = min(self.shared, length)

    def truncate(self, lengths: list[int]) -> None:
        """Forget every slot past ``lengths[b]`` in row ``b`` (a rollback)."""
        if any(n > m for n, m in zip(lengths, self.lengths, strict=True)):
            raise ValueError("truncate cannot lengthen a row")
        self.lengths = list(lengths)
        self.shared = min(self.shared, *lengths)

    def reorder(self, index: Tensor, start: int = 0) -> None:
        """Select batch rows (beam search): row i becomes old row ``index[i]``;
        slots below ``start`` already hold the same bits in both (not copied)."""
        order = index.tolist()
        moved = [i for i, j in enumerate(order) if i != j]  # only these are copied
        if moved:
            filled = slice(max(start, self.shared), self.length)
            dst = torch.tensor(moved, device=index.device)
            src = index[dst]
            self.keys[:, dst, filled] = self.keys[:, src, filled]
            self.values[:, dst, filled] = self.values[:, src, filled]
        self.lengths = [self.lengths[i] for i in order]


@dataclass
class _CacheStep:
    """One forward pass's use of a :class:`KVCache`."""

    cache: KVCache
    positions: Tensor  # (B, T)
    span: int
    start: int | None = None  # every row's first position, when they agree

    def write(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        return self.cache.write(layer, k, v, self.positions, self.span, self.start)


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
        step: _CacheStep | None = None,
        layer: int = 0,
    ) -> Tensor:
        b, t, d = x.shape
        q = self._heads(self.W_query(x))
        k = self._heads(self.W_key(x))
        v = self._heads(self.W_value(x))
        if step is not None:
            k, v = step.write(layer, k, v)
        out = attention(q, k, v, mask, self.drop_rate if self.training else 0.0)
        # (B, H, T, hd) -> (B, T, H, hd) -> (B, T, D)
        out = out.transpose(1, 2).reshape(b, t, d)
        return self.out_proj(out)


def attention(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor | str | None, dropout: float
) -> Tensor:
    """SDPA of (B, H, T, hd) queries over (B, H / group, S, hd) keys and values
    (grouped-query attention when group > 1); ``mask``: :data:`CAUSAL`, a
    boolean mask, or None (every key visible). A decoding step (one query per
    row) on the CPU runs gptkit's C kernel (:mod:`gptkit.system.decode_attention`);
    other (<= 16) bf16/fp16 CPU queries attend on float32 copies: PyTorch's CPU
    kernel ran 2-3x slower in bf16 (docs/fast-inference.md)."""
    causal, dtype = isinstance(mask, str), q.dtype
    if q.shape[-2] == 1 and not (causal or dropout or torch.compiler.is_compiling()):
        out = decode_attention.attend(q, k, v, mask)
        if out is not None:
            return out
    if (group := q.shape[1] // k.shape[1]) > 1:  # a key/value head per group
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    if q.dtype in (torch.bfloat16, torch.float16) and q.is_cpu and q.shape[-2] <= 16:
        q, k, v = q.float(), k.float(), v.float()  # dtype: the caller's, below
    out = F.scaled_dot_product_attention(
        q, k, v, attn_mask=None if causal else mask, dropout_p=dropout, is_causal=causal
    )
    return out.to(dtype)


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
        self,
        x: Tensor,
        mask: Tensor | str | None,
        step: _CacheStep | None,
        layer: int,
    ) -> Tensor:
        h = self.att(self.norm1(x), mask, step, layer)
        x = x + (self.drop_shortcut(h) if self.training else h)
        h = self.ff(self.norm2(x))
        return x + (self.drop_shortcut(h) if self.training else h)


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
        self.tie_weights()

    def blocks(self) -> list[nn.Module]:
        """The transformer blocks (FSDP units, activation checkpointing)."""
        return list(self.trf_blocks)

    def tie_weights(self) -> None:
        """Make the keys :meth:`GPTConfig.tied_keys` names share one tensor."""
        for key, shared in self.cfg.tied_keys().items():
            module, _, name = key.rpartition(".")
            source = self.get_parameter(shared)
            setattr(self.get_submodule(module), name, source)

    def forward(
        self,
        in_idx: Tensor,
        *,
        cache: KVCache | None = None,
        position_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        logits_at: Tensor | None = None,
    ) -> Tensor:
        """Logits (B, T, vocab) for token ids ``in_idx`` (B, T).

        ``cache``: add these tokens to each row of a :class:`KVCache` at the
        row's next positions and attend to everything before them (positions
        come from the cache). Without a cache, ``attention_mask`` (B, T) marks
        real tokens (True) against left padding and ``position_ids`` (B, T)
        default to ``0 .. T-1``. ``logits_at`` (B,): return only the logits of
        that position of each row, (B, 1, vocab) (the last real token of a
        padded prefill: the output head is the largest matrix product).
        """
        if cache is not None and (fused := self.__dict__.get("fused_step")):
            # a quantizer's whole decoding step (Quantizer.fused_step), or None
            logits = fused(in_idx, cache, position_ids, attention_mask, logits_at)
            if logits is not None:
                return logits
        step, mask, position_ids = attention_inputs(
            in_idx, cache, position_ids, attention_mask
        )
        t = in_idx.shape[1]
        x = self.tok_emb(in_idx) + self.pos_emb(position_ids)
        x = self.drop_emb(x)
        for layer, block in enumerate(self.trf_blocks):
            x = block(x, mask, step, layer)
        if cache is not None:
            cache.advance(t)
        if logits_at is not None:
            rows = torch.arange(x.shape[0], device=x.device)
            x = x[rows, logits_at][:, None]  # (B, 1, D)
        return self.out_head(self.final_norm(x))


def attention_inputs(
    in_idx: Tensor,
    cache: KVCache | None,
    position_ids: Tensor | None,
    attention_mask: Tensor | None,
) -> tuple[_CacheStep | None, Tensor | str | None, Tensor]:
    """What every architecture's forward pass derives from its arguments (see
    :meth:`GPTModel.forward`): the cache step (or None), the attention mask
    (:data:`CAUSAL`, None or a boolean tensor) and the positions (B, T) or (T,)."""
    t = in_idx.shape[1]
    step: _CacheStep | None = None
    mask: Tensor | str | None = CAUSAL
    if cache is not None:
        if attention_mask is not None:
            raise ValueError("a cached forward takes its positions from the cache")
        if cache.length + t > cache.capacity:
            raise ValueError(
                f"KV cache holds {cache.capacity} positions; {cache.length + t} needed"
            )
        uniform = position_ids is None and len(set(cache.lengths)) == 1
        if position_ids is None:
            position_ids = cache.positions(t, in_idx.device)
        start = cache.lengths[0] if uniform else None
        step = _CacheStep(cache, position_ids, cache.span(t), start)
        mask = _cache_mask(cache, position_ids, t, step.span)
    else:
        if position_ids is None:
            position_ids = torch.arange(t, device=in_idx.device)
        if attention_mask is not None:
            mask = _attention_mask(t, attention_mask, in_idx.device)
    return step, mask, position_ids


def _cache_mask(
    cache: KVCache, positions: Tensor, t: int, span: int
) -> Tensor | str | None:
    """The attention mask of a cached forward: slot j is visible to the query
    at position p of its row when j <= p (every such slot is filled)."""
    uniform = len(set(cache.lengths)) == 1
    if not cache.static and uniform:
        if t == 1:
            return None  # one new token per row sees the whole filled prefix
        if cache.length == 0:
            return CAUSAL  # a prefill of equal rows: the fused kernels' fast path
    slots = torch.arange(span, device=positions.device)
    return slots[None, None, None, :] <= positions[:, None, :, None]  # (B, 1, T, S)


def _attention_mask(t: int, key_mask: Tensor, device: torch.device) -> Tensor:
    """Boolean mask (B, 1, T, T) of an uncached pass over left-padded rows:
    query i sees key j when j <= i and key j is a real token. Each query also
    sees itself, so rows of padding never become all-masked (which would turn
    them into NaN)."""
    query_pos = torch.arange(t, device=device)[:, None]
    key_pos = torch.arange(t, device=device)[None, :]
    causal = key_pos <= query_pos  # (T, T)
    allowed = causal[None] & key_mask[:, None, :].bool()  # (B, T, T)
    allowed |= key_pos == query_pos
    return allowed[:, None]
