"""A compiled decoding step: ``torch.compile`` of one token per row through a
static-shape key/value cache.

Decoding feeds one token per row per step, so every step has the same shapes
once the cache is static (attention always spans the whole capacity; a mask
built from the positions hides the empty slots). Compiled once per model and
shape, the step runs as fused kernels (Inductor's C++ on the CPU, Triton on a
GPU) and, on CUDA, as one CUDA graph replay (``mode="reduce-overhead"``):
at batch size 1 a 124M model's step is bound by kernel launches there, not by
memory (the motivation of gpt-fast, PyTorch's 2023 "Accelerating Generative AI"
series). The prefill and the sliding window past the context stay eager.

The compiled function sees only tensors: the token ids, their positions and
the cache's key/value storage (marked static, so CUDA graphs may write it in
place); the cache's host-side lengths are advanced outside.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from gptkit.core.model import GPTModel, KVCache

Step = Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]


def compile_mode(device: torch.device) -> str:
    """``reduce-overhead`` (CUDA graphs) on CUDA, Inductor's default elsewhere."""
    return "reduce-overhead" if device.type == "cuda" else "default"


def _step(model: GPTModel) -> Step:
    def step(ids: Tensor, positions: Tensor, keys: Tensor, values: Tensor) -> Tensor:
        # A cache object over the same storage; its lengths are placeholders
        # (a static cache reads positions only), so no Python ints get traced.
        cache = KVCache(keys, values, [0] * ids.shape[0], static=True)
        return model(ids, cache=cache, position_ids=positions)

    return step


def compiled_step(model: GPTModel) -> Step:
    """The model's compiled decoding step (built on first use, kept on the
    model): ``step(ids (B, 1), positions (B, 1), keys, values) -> logits``."""
    device = next(model.parameters()).device
    mode = compile_mode(device)
    steps: dict[str, Step] = model.__dict__.setdefault("_gptkit_compiled_steps", {})
    if mode not in steps:
        steps[mode] = torch.compile(_step(model), mode=mode, dynamic=False)
    return steps[mode]


def run_step(model: GPTModel, cache: KVCache, ids: Tensor) -> Tensor:
    """One compiled step: ``ids`` (B, 1) at each row's next position of the
    static ``cache``; advances its lengths; returns logits (B, 1, V)."""
    if not cache.static:
        raise ValueError("the compiled step needs a static cache")
    if cache.length + 1 > cache.capacity:
        raise ValueError(f"KV cache holds {cache.capacity} positions")
    if not getattr(cache, "_marked_static", False):
        mark = getattr(torch._dynamo, "mark_static_address", None)
        if mark is not None:
            mark(cache.keys)
            mark(cache.values)
        cache._marked_static = True  # type: ignore[attr-defined]
    positions = cache.positions(1, ids.device)  # (B, 1)
    logits = compiled_step(model)(ids, positions, cache.keys, cache.values)
    cache.advance(1)
    return logits
