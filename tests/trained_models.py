"""Small models trained on gptkit's built-in corpus (CPython's documentation,
offline) in under a minute, shared by the quantization and speculative-decoding
tests (trained once per session).

The corpus's GPT-2 token ids are renumbered densely (its ~4,900 distinct tokens
become 0..U-1) and the models get that vocabulary, so their output head is 10x
smaller than GPT-2's; 90% of the tokens train, the last 10% are held out (the
models see under one epoch, so held-out perplexity means something).
"""

from __future__ import annotations

import functools

import torch

from gptkit.core.config import GPTConfig, get_preset
from gptkit.core.model import GPTModel
from gptkit.core.tokenizer import encode

CONTEXT = 64


@functools.cache
def _dense_ids() -> torch.Tensor:
    from gptkit.core.registry import get_registry

    docs = get_registry().corpora.create("python-docs").documents()
    ids = torch.tensor(encode("<|endoftext|>".join(docs)))
    _, dense = torch.unique(ids, return_inverse=True)
    return dense


def vocab_size() -> int:
    return int(_dense_ids().max()) + 1


def split_ids() -> tuple[torch.Tensor, torch.Tensor]:
    """Dense token ids: the first 90% for training, the rest held out."""
    ids = _dense_ids()
    cut = int(len(ids) * 0.9)
    return ids[:cut], ids[cut:]


def windows(ids: torch.Tensor, length: int = CONTEXT) -> tuple[torch.Tensor, ...]:
    """(inputs, targets), each (N, length): non-overlapping windows."""
    n = (len(ids) - 1) // length
    inputs = ids[: n * length].view(n, length)  # (N, T)
    targets = ids[1 : n * length + 1].view(n, length)
    return inputs, targets


@functools.cache
def trained(cfg: GPTConfig, steps: int, seed: int = 0) -> GPTModel:
    """A model of ``cfg`` trained for ``steps`` AdamW steps (batch 8), on one
    thread (small steps; the test machine is shared)."""
    torch.manual_seed(seed)
    model = GPTModel(cfg)
    inputs, targets = windows(split_ids()[0], cfg.context_length)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.1)
    g = torch.Generator().manual_seed(seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _train(model, opt, inputs, targets, steps, g)
    finally:
        torch.set_num_threads(threads)
    return model.eval()


def _train(model, opt, inputs, targets, steps, g) -> None:
    for _ in range(steps):
        pick = torch.randint(0, len(inputs), (8,), generator=g)
        logits = model(inputs[pick])
        loss = torch.nn.functional.cross_entropy(
            logits.flatten(0, 1), targets[pick].flatten()
        )
        opt.zero_grad()
        loss.backward()
        opt.step()


def target_config() -> GPTConfig:
    return get_preset("tiny").replace(
        context_length=CONTEXT, tie_embeddings=True, vocab_size=vocab_size()
    )


def draft_config() -> GPTConfig:
    return target_config().replace(emb_dim=32, n_heads=2, n_layers=1)


def target_model() -> GPTModel:
    return trained(target_config(), steps=150)


def draft_model() -> GPTModel:
    return trained(draft_config(), steps=150, seed=1)


@torch.no_grad()
def held_out_loss(model: GPTModel, windows_used: int = 64) -> float:
    inputs, targets = windows(split_ids()[1], model.cfg.context_length)
    inputs, targets = inputs[:windows_used], targets[:windows_used]
    logits = model(inputs)
    return float(
        torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())
    )
