"""The Llama 3 / Qwen3 decoder: RMSNorm, SwiGLU, rotary position embeddings
with Llama 3's frequency scaling, grouped-query attention, and (Qwen3) RMSNorm
on each head's queries and keys.

References: Touvron et al. (2023), "Llama" (RMSNorm pre-normalisation, SwiGLU,
rotary embeddings); Su et al. (2021), "RoFormer" (rotary embeddings); Ainslie
et al. (2023), "GQA"; Meta's Llama 3.1 report (2024), section 3.3 (the
frequency scaling for long contexts); the Qwen3 technical report (2025),
section 2 (QK-norm). The book's bonus notebooks (ch05/07_gpt_to_llama,
ch05/11_qwen3) build the same models step by step.

Parameter names follow the book's (``tok_emb``, ``trf_blocks.{i}.att.W_query``,
``ff.fc1`` gate / ``fc2`` up / ``fc3`` down, ``norm1``, ``final_norm``,
``out_head``), so quantization and every other layer-name rule treat the
families alike. Rotary tables are computed from the positions of each call (no
buffers: a model built on the meta device and assigned its weights is complete).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gptkit.core.model import CAUSAL, KVCache, attention, attention_inputs

if TYPE_CHECKING:
    from gptkit.core.model import _CacheStep

#: A :class:`~gptkit.plugins.architectures.llama.LlamaConfig` (not imported:
#: the config module imports this one when it builds a model).
LlamaConfig = Any


class RMSNorm(nn.Module):
    """Root-mean-square normalisation (Zhang & Sennrich, 2019), computed in
    float32 and scaled in the input's dtype (as Llama's reference code)."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        dtype = x.dtype
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(dtype)


def inverse_frequencies(cfg: LlamaConfig, device: torch.device) -> Tensor:
    """RoPE's inverse frequencies (head_dim / 2,), float32, with Llama 3's
    scaling when ``cfg.rope_factor`` != 1: wavelengths longer than the original
    context / low_freq_factor are divided by the factor, shorter than original
    / high_freq_factor kept, and those between interpolated smoothly."""
    dim = cfg.head_dim
    steps = torch.arange(0, dim, 2, dtype=torch.int64, device=device).float()
    inv_freq = 1.0 / (cfg.rope_base ** (steps / dim))
    if cfg.rope_factor == 1.0:
        return inv_freq
    factor = cfg.rope_factor
    low, high = cfg.rope_low_freq_factor, cfg.rope_high_freq_factor
    original = cfg.rope_original_context
    low_freq_wavelen = original / low
    high_freq_wavelen = original / high
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    smooth = (original / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < high_freq_wavelen) & ~(wavelen > low_freq_wavelen)
    return torch.where(medium, smoothed, scaled)


def rotary_tables(
    cfg: LlamaConfig, positions: Tensor, dtype: torch.dtype
) -> tuple[Tensor, Tensor]:
    """cos and sin (B, 1, T, head_dim) (or (1, 1, T, head_dim) for positions
    (T,)) of the rotation at each position, computed in float32."""
    inv_freq = inverse_frequencies(cfg, positions.device)
    if positions.dim() == 1:
        positions = positions[None]
    freqs = positions[..., None].float() * inv_freq  # (B, T, hd/2)
    angles = torch.cat((freqs, freqs), dim=-1)  # (B, T, hd)
    return angles.cos().to(dtype)[:, None], angles.sin().to(dtype)[:, None]


def _rotate_half(x: Tensor) -> Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate (B, H, T, hd) queries or keys (the halves convention of the
    Hugging Face checkpoints)."""
    return x * cos + _rotate_half(x) * sin


class GroupedQueryAttention(nn.Module):
    """Causal attention with ``n_kv_heads`` key/value heads shared by groups of
    query heads; optional RMSNorm of each head's queries and keys (Qwen3)."""

    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        d, hd = cfg.emb_dim, cfg.head_dim
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, hd
        self.drop_rate = cfg.drop_rate
        self.W_query = nn.Linear(d, cfg.n_heads * hd, bias=cfg.qkv_bias)
        self.W_key = nn.Linear(d, cfg.n_kv_heads * hd, bias=cfg.qkv_bias)
        self.W_value = nn.Linear(d, cfg.n_kv_heads * hd, bias=cfg.qkv_bias)
        self.out_proj = nn.Linear(cfg.n_heads * hd, d, bias=False)
        if cfg.qk_norm:
            self.q_norm = RMSNorm(hd, cfg.norm_eps)
            self.k_norm = RMSNorm(hd, cfg.norm_eps)
        else:
            self.q_norm = self.k_norm = None

    def forward(
        self,
        x: Tensor,
        rotary: tuple[Tensor, Tensor],
        mask: Tensor | str | None,
        step: _CacheStep | None,
        layer: int,
    ) -> Tensor:
        b, t, _ = x.shape
        # (B, T, H*hd) -> (B, T, H, hd); the norms act on each head's vector
        q = self.W_query(x).view(b, t, self.n_heads, self.head_dim)
        k = self.W_key(x).view(b, t, self.n_kv_heads, self.head_dim)
        v = self.W_value(x).view(b, t, self.n_kv_heads, self.head_dim)
        if self.q_norm is not None and self.k_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        # (B, T, H, hd) -> (B, H, T, hd)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        cos, sin = rotary
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if step is not None:
            k, v = step.write(layer, k, v)
        out = attention(q, k, v, mask, self.drop_rate if self.training else 0.0)
        # (B, H, T, hd) -> (B, T, H*hd)
        out = out.transpose(1, 2).reshape(b, t, self.n_heads * self.head_dim)
        return self.out_proj(out)


class SwiGLU(nn.Module):
    """The gated MLP (Shazeer, 2020): fc3(silu(fc1(x)) * fc2(x))."""

    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(cfg.emb_dim, cfg.hidden_dim, bias=False)  # gate
        self.fc2 = nn.Linear(cfg.emb_dim, cfg.hidden_dim, bias=False)  # up
        self.fc3 = nn.Linear(cfg.hidden_dim, cfg.emb_dim, bias=False)  # down

    def forward(self, x: Tensor) -> Tensor:
        return self.fc3(F.silu(self.fc1(x)) * self.fc2(x))


class LlamaBlock(nn.Module):
    """Pre-RMSNorm block: attention and SwiGLU, each with a shortcut."""

    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.att = GroupedQueryAttention(cfg)
        self.ff = SwiGLU(cfg)
        self.norm1 = RMSNorm(cfg.emb_dim, cfg.norm_eps)
        self.norm2 = RMSNorm(cfg.emb_dim, cfg.norm_eps)
        self.drop_shortcut = nn.Dropout(cfg.drop_rate)

    def forward(
        self,
        x: Tensor,
        rotary: tuple[Tensor, Tensor],
        mask: Tensor | str | None,
        step: _CacheStep | None,
        layer: int,
    ) -> Tensor:
        x = x + self.drop_shortcut(self.att(self.norm1(x), rotary, mask, step, layer))
        return x + self.drop_shortcut(self.ff(self.norm2(x)))


class LlamaModel(nn.Module):
    """A Llama 3 or Qwen3 decoder returning next-token logits; the same
    ``forward`` as :class:`gptkit.core.model.GPTModel`."""

    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.emb_dim)
        self.drop_emb = nn.Dropout(cfg.drop_rate)
        self.trf_blocks = nn.Sequential(*[LlamaBlock(cfg) for _ in range(cfg.n_layers)])
        self.final_norm = RMSNorm(cfg.emb_dim, cfg.norm_eps)
        self.out_head = nn.Linear(cfg.emb_dim, cfg.vocab_size, bias=False)
        self._init_weights()
        self.tie_weights()

    def _init_weights(self) -> None:
        """Normal(0, 0.02) weights and zero biases (the initialisation of the
        Hugging Face implementations): a tied head then starts with small
        logits."""
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)

    def blocks(self) -> list[nn.Module]:
        """The transformer blocks (FSDP units, activation checkpointing)."""
        return list(self.trf_blocks)

    def tie_weights(self) -> None:
        """A tied head shares the token embedding's tensor."""
        for key, shared in self.cfg.tied_keys().items():
            module, _, name = key.rpartition(".")
            setattr(self.get_submodule(module), name, self.get_parameter(shared))

    def forward(
        self,
        in_idx: Tensor,
        *,
        cache: KVCache | None = None,
        position_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        logits_at: Tensor | None = None,
    ) -> Tensor:
        """Logits (B, T, vocab); arguments as ``GPTModel.forward``'s."""
        if cache is not None and (fused := self.__dict__.get("fused_step")):
            # a quantizer's whole decoding step (Quantizer.fused_step), or None
            logits = fused(in_idx, cache, position_ids, attention_mask, logits_at)
            if logits is not None:
                return logits
        step, mask, positions = attention_inputs(
            in_idx, cache, position_ids, attention_mask
        )
        x = self.drop_emb(self.tok_emb(in_idx))
        rotary = rotary_tables(self.cfg, positions, x.dtype)
        for layer, block in enumerate(self.trf_blocks):
            x = block(x, rotary, mask, step, layer)
        if cache is not None:
            cache.advance(in_idx.shape[1])
        if logits_at is not None:
            rows = torch.arange(x.shape[0], device=x.device)
            x = x[rows, logits_at][:, None]  # (B, 1, D)
        return self.out_head(self.final_norm(x))


__all__ = ["CAUSAL", "LlamaModel", "RMSNorm", "inverse_frequencies"]
