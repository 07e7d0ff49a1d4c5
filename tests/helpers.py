"""Small builders shared by tests."""

from __future__ import annotations

import torch

from gptkit.core.config import GPTConfig
from gptkit.core.model import GPTModel


def tiny_config(**changes) -> GPTConfig:
    base = GPTConfig(
        context_length=32, emb_dim=32, n_layers=2, n_heads=4, drop_rate=0.0
    )
    return base.replace(**changes)


def tiny_model(seed: int = 0, **changes) -> GPTModel:
    torch.manual_seed(seed)
    return GPTModel(tiny_config(**changes)).eval()


@torch.no_grad()
def greedy_without_cache(model: GPTModel, ids: list[int], n: int) -> list[int]:
    """The book's generate_text_simple: recompute the cropped window each step."""
    ctx = model.cfg.context_length
    ids = list(ids)
    out = []
    for _ in range(n):
        logits = model(torch.tensor([ids[-ctx:]]))
        nxt = int(logits[0, -1].argmax())
        ids.append(nxt)
        out.append(nxt)
    return out
