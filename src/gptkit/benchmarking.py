"""Measurement code shared by the pytest-benchmark suites in ``benchmarks/`` (and
the ``gptkit bench`` command): models with fixed random weights, a transformers
twin with identical weights, and one runner per decoding method, so every
contender does the same work on the same weights.

Torch and transformers are imported when used.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

PROMPT = [464, 1893, 286, 262, 1110, 318, 257, 649]  # 8 tokens


def sync(device: Any) -> None:
    """Wait for queued GPU work, so a timer measures it."""
    import torch

    if getattr(device, "type", str(device)) == "cuda":
        torch.cuda.synchronize()


def bench_model(
    preset: str = "gpt2-124m",
    *,
    seed: int = 0,
    dtype: str = "fp32",
    device: str = "cpu",
) -> Any:
    """A preset-shaped GPTModel with seeded random weights, tied head, eval mode."""
    import torch

    from gptkit.core.config import get_preset
    from gptkit.core.device import resolve_dtype
    from gptkit.core.model import GPTModel

    cfg = get_preset(preset).replace(tie_embeddings=True, qkv_bias=True, drop_rate=0.0)
    torch.manual_seed(seed)
    model = GPTModel(cfg).eval()
    return model.to(device=device, dtype=resolve_dtype(dtype))


def transformers_twin(model: Any) -> Any:
    """A ``transformers.GPT2LMHeadModel`` holding the same weights as ``model``."""
    import transformers

    from gptkit.core.hf_format import config_to_hf, state_to_hf

    cfg = model.cfg
    hf_cfg = transformers.GPT2Config(**config_to_hf(cfg))
    twin = transformers.GPT2LMHeadModel(hf_cfg)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if cfg.tie_embeddings:
        state.pop("out_head.weight", None)
    twin.load_state_dict(state_to_hf(cfg, state), strict=False)
    twin.tie_weights()
    param = next(model.parameters())
    return twin.to(device=param.device, dtype=param.dtype).eval()


def gptkit_runner(
    model: Any, sampler: Any, prompt: list[int], max_new_tokens: int, seed: int = 0
) -> Callable[[], int]:
    """Generate ``max_new_tokens`` (no end-of-text stop); returns tokens made."""
    import torch

    from gptkit.core.generate import generate_tokens

    def run() -> int:
        g = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
        out = generate_tokens(
            model,
            [prompt],
            sampler,
            max_new_tokens=max_new_tokens,
            eos_id=None,
            generator=g,
        )
        sync(next(model.parameters()).device)
        return sum(len(r.new_ids) for r in out)

    return run


def no_cache_runner(
    model: Any, prompt: list[int], max_new_tokens: int
) -> Callable[[], int]:
    """The book's ``generate_text_simple``: the whole window recomputed each step."""
    import torch

    ctx = model.cfg.context_length

    def run() -> int:
        device = next(model.parameters()).device
        ids = torch.tensor([prompt], device=device)
        with torch.no_grad():
            for _ in range(max_new_tokens):
                logits = model(ids[:, -ctx:])[:, -1, :]
                ids = torch.cat([ids, logits.argmax(-1, keepdim=True)], dim=1)
        sync(device)
        return max_new_tokens

    return run


TRANSFORMERS_MODES: dict[str, dict[str, Any]] = {
    "greedy": {"do_sample": False, "num_beams": 1},
    "top-p": {"do_sample": True, "top_p": 0.9, "temperature": 0.8, "top_k": 0},
    "beam": {"do_sample": False, "num_beams": 4, "early_stopping": False},
}


def transformers_runner(
    twin: Any, mode: str, prompt: list[int], max_new_tokens: int, seed: int = 0
) -> Callable[[], int]:
    """``transformers``' ``generate`` for ``mode`` (see TRANSFORMERS_MODES)."""
    import torch

    device = next(twin.parameters()).device
    ids = torch.tensor([prompt], device=device)
    kwargs = {
        **TRANSFORMERS_MODES[mode],
        "max_new_tokens": max_new_tokens,
        "min_new_tokens": max_new_tokens,
        "pad_token_id": 50256,
    }

    def run() -> int:
        torch.manual_seed(seed)
        with torch.inference_mode():
            out = twin.generate(ids, attention_mask=torch.ones_like(ids), **kwargs)
        sync(device)
        return out.shape[1] - ids.shape[1]

    return run


@dataclass
class Measurement:
    """Seconds of each measured repeat and tokens per repeat."""

    name: str
    seconds: list[float]
    tokens: int

    @property
    def best(self) -> float:
        return min(self.seconds)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.best


def measure(
    name: str, run: Callable[[], int], repeats: int = 3, warmup: int = 1
) -> Measurement:
    """Warm-up runs (discarded), then ``repeats`` timed runs."""
    for _ in range(warmup):
        run()
    seconds, tokens = [], 0
    for _ in range(repeats):
        start = time.perf_counter()
        tokens = run()
        seconds.append(time.perf_counter() - start)
    return Measurement(name, seconds, tokens)
