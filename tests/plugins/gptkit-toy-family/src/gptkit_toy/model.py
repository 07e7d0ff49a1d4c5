"""The toy model: torch at the top is fine here (imported when a model is built)."""

import torch
import torch.nn.functional as F
from torch import nn

from gptkit.core.model import attention_inputs


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d, self.heads, self.hd = cfg.emb_dim, cfg.n_heads, cfg.head_dim
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.W_query = nn.Linear(d, d, bias=False)
        self.W_key = nn.Linear(d, self.hd, bias=False)  # one key/value head
        self.W_value = nn.Linear(d, self.hd, bias=False)
        self.out_proj = nn.Linear(d, d, bias=False)
        self.ff = nn.Sequential(nn.Linear(d, 4 * d), nn.ReLU(), nn.Linear(4 * d, d))

    def forward(self, x, mask, step, layer):
        b, t, d = x.shape
        h = self.norm1(x)
        q = self.W_query(h).view(b, t, self.heads, self.hd).transpose(1, 2)
        k = self.W_key(h).view(b, t, 1, self.hd).transpose(1, 2)
        v = self.W_value(h).view(b, t, 1, self.hd).transpose(1, 2)
        if step is not None:
            k, v = step.cache.write(layer, k, v, step.positions, step.span)
        k = k.expand(-1, self.heads, -1, -1)
        v = v.expand(-1, self.heads, -1, -1)
        if isinstance(mask, str):
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = x + self.out_proj(out.transpose(1, 2).reshape(b, t, d))
        return x + self.ff(self.norm2(x))


class ToyModel(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.emb_dim)
        nn.init.normal_(self.tok_emb.weight, std=0.02)
        self.trf_blocks = nn.Sequential(*[Block(cfg) for _ in range(cfg.n_layers)])
        self.final_norm = nn.LayerNorm(cfg.emb_dim)
        self.out_head = nn.Linear(cfg.emb_dim, cfg.vocab_size, bias=False)
        self.tie_weights()

    def tie_weights(self):
        if self.cfg.tie_embeddings:
            self.out_head.weight = self.tok_emb.weight

    def blocks(self):
        return list(self.trf_blocks)

    def forward(
        self, in_idx, *, cache=None, position_ids=None, attention_mask=None,
        logits_at=None,
    ):  # fmt: skip
        step, mask, _ = attention_inputs(in_idx, cache, position_ids, attention_mask)
        x = self.tok_emb(in_idx)
        for layer, block in enumerate(self.trf_blocks):
            x = block(x, mask, step, layer)
        if cache is not None:
            cache.advance(in_idx.shape[1])
        if logits_at is not None:
            x = x[torch.arange(x.shape[0], device=x.device), logits_at][:, None]
        return self.out_head(self.final_norm(x))
