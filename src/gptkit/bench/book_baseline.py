"""The training benchmarks' baseline: a model and step written to match the
implementation style of *Build a Large Language Model (From Scratch)* (S.
Raschka, 2024), chapters 3-5: the same architecture and parameter names as
gptkit's model, but

- attention with an explicit causal mask and softmax (chapter 3's
  ``MultiHeadAttention``: a registered upper-triangular mask buffer,
  ``masked_fill_`` with -inf, softmax of the scaled scores, dropout on the
  weights);
- a hand-written LayerNorm (mean and biased variance, then scale and shift) and
  a hand-written tanh-approximation GELU (chapter 4);
- the chapter-5 training step (``calc_loss_batch`` + ``backward`` +
  ``optimizer.step``) with ``torch.optim.AdamW(foreach=False)``, the per-tensor
  loop PyTorch uses by default for CPU tensors, in fp32.

Written for this benchmark from the book's description; it is not the book's
code. ``gptkit bench training`` and ``benchmarks/test_training.py`` time it in
the same process and with the same torch threads as gptkit's own step. Run as a
script (``python -m gptkit.bench.book_baseline``) it times training steps in a
fresh process (so with glibc's default allocator settings unless
--tune-allocator) and prints JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch
from torch import Tensor, nn
from torch.profiler import record_function

from gptkit.core.config import GPTConfig, get_preset


class BookLayerNorm(nn.Module):
    """Normalise over the last dimension, written out: (x - mean) / std."""

    def __init__(self, emb_dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.scale = nn.Parameter(torch.ones(emb_dim))
        self.shift = nn.Parameter(torch.zeros(emb_dim))

    def forward(self, x: Tensor) -> Tensor:
        mean = x.mean(dim=-1, keepdim=True)
        var = x.var(dim=-1, keepdim=True, unbiased=False)
        return self.scale * ((x - mean) / torch.sqrt(var + self.eps)) + self.shift


class BookGELU(nn.Module):
    """0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), as separate tensor ops."""

    def forward(self, x: Tensor) -> Tensor:
        inner = math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3))
        return 0.5 * x * (1.0 + torch.tanh(inner))


class BookAttention(nn.Module):
    """Causal multi-head attention with an explicit mask and softmax."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        d = cfg.emb_dim
        self.n_heads = cfg.n_heads
        self.head_dim = d // cfg.n_heads
        self.W_query = nn.Linear(d, d, bias=cfg.qkv_bias)
        self.W_key = nn.Linear(d, d, bias=cfg.qkv_bias)
        self.W_value = nn.Linear(d, d, bias=cfg.qkv_bias)
        self.out_proj = nn.Linear(d, d)
        self.dropout = nn.Dropout(cfg.drop_rate)
        mask = torch.triu(torch.ones(cfg.context_length, cfg.context_length), 1)
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        b, t, d = x.shape
        # (B, T, D) -> (B, T, H, hd) -> (B, H, T, hd)
        q = self.W_query(x).view(b, t, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.W_key(x).view(b, t, self.n_heads, self.head_dim).transpose(1, 2)
        v = self.W_value(x).view(b, t, self.n_heads, self.head_dim).transpose(1, 2)
        scores = q @ k.transpose(2, 3)  # (B, H, T, T)
        scores.masked_fill_(self.mask.bool()[:t, :t], -torch.inf)
        weights = torch.softmax(scores / self.head_dim**0.5, dim=-1)
        weights = self.dropout(weights)
        out = (weights @ v).transpose(1, 2).reshape(b, t, d)  # (B, T, D)
        return self.out_proj(out)


class BookFeedForward(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(cfg.emb_dim, 4 * cfg.emb_dim),
            BookGELU(),
            nn.Linear(4 * cfg.emb_dim, cfg.emb_dim),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class BookBlock(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.att = BookAttention(cfg)
        self.ff = BookFeedForward(cfg)
        self.norm1 = BookLayerNorm(cfg.emb_dim)
        self.norm2 = BookLayerNorm(cfg.emb_dim)
        self.drop_shortcut = nn.Dropout(cfg.drop_rate)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_shortcut(self.att(self.norm1(x)))
        return x + self.drop_shortcut(self.ff(self.norm2(x)))


class BookGPT(nn.Module):
    """The GPT of chapter 4 (parameter names as gptkit's, so weights load)."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.emb_dim)
        self.pos_emb = nn.Embedding(cfg.context_length, cfg.emb_dim)
        self.drop_emb = nn.Dropout(cfg.drop_rate)
        self.trf_blocks = nn.Sequential(*[BookBlock(cfg) for _ in range(cfg.n_layers)])
        self.final_norm = BookLayerNorm(cfg.emb_dim)
        self.out_head = nn.Linear(cfg.emb_dim, cfg.vocab_size, bias=False)

    def forward(self, idx: Tensor) -> Tensor:
        t = idx.shape[1]
        pos = self.pos_emb(torch.arange(t, device=idx.device))
        x = self.drop_emb(self.tok_emb(idx) + pos)
        x = self.trf_blocks(x)
        return self.out_head(self.final_norm(x))  # (B, T, V)


def book_train_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, inputs: Tensor, targets: Tensor
) -> float:
    """One step of the book's ``train_model_simple`` loop (its phases labelled
    for ``torch.profiler`` as gptkit's are; the labels cost microseconds)."""
    with record_function("gptkit.optimizer"):
        optimizer.zero_grad()
    with record_function("gptkit.forward"):
        logits = model(inputs)
        loss = nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())
    with record_function("gptkit.backward"):
        loss.backward()
    with record_function("gptkit.optimizer"):
        optimizer.step()
    return loss.item()


def book_setup(
    cfg: GPTConfig, batch_size: int, seed: int = 123
) -> tuple[nn.Module, torch.optim.Optimizer, Tensor, Tensor]:
    """The model, the book's optimizer and one batch of random token ids."""
    torch.manual_seed(seed)
    model = BookGPT(cfg).train()
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=4e-4, weight_decay=0.1, foreach=False
    )
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(
        0, cfg.vocab_size, (batch_size, cfg.context_length + 1), generator=g
    )
    return model, optimizer, ids[:, :-1], ids[:, 1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="gpt2-124m")
    parser.add_argument("--context-length", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--tune-allocator", action="store_true")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.tune_allocator:
        from gptkit.system.allocator import tune_cpu_allocator

        tune_cpu_allocator()
    cfg = get_preset(args.preset).replace(context_length=args.context_length)
    model, optimizer, x, y = book_setup(cfg, args.batch_size)
    for _ in range(args.warmup):
        book_train_step(model, optimizer, x, y)
    times = []
    for _ in range(args.steps):
        started = time.perf_counter()
        book_train_step(model, optimizer, x, y)
        times.append(time.perf_counter() - started)
    print(json.dumps({"step_seconds": times, "tokens_per_step": x.numel()}))


if __name__ == "__main__":
    main()
