"""Beam search reading its beams' common history once: 4 beams on a 124M-shaped
GPT-2 (random weights, int8, the fused CPU step), a short prompt (8 tokens) and
a long one (480), 100 new tokens each — against the same search with every
beam reading (and, when it takes another beam's history, copying) its whole
cache, as gptkit did before. Both give the same tokens and scores (checked
here too). "tokens/s" counts the new tokens of the returned sequence.

    pytest benchmarks/test_beam_history.py --benchmark-only

One thread, like ``gptkit bench``'s first row (``GPTKIT_BENCH_THREADS=0``: torch's
default).
"""

from __future__ import annotations

import contextlib
import os

import pytest
import torch

from benchmarks.conftest import ratio
from gptkit.bench.measure import torch_threads
from gptkit.bench.runners import PROMPT, bench_model
from gptkit.core.generate import generate_tokens
from gptkit.core.quantize import quantize_model
from gptkit.core.registry import get_registry
from gptkit.plugins.samplers import beam
from gptkit.system import decode_step

NEW_TOKENS = int(os.environ.get("GPTKIT_BENCH_TOKENS", "100"))
THREADS = os.environ.get("GPTKIT_BENCH_THREADS")
PROMPTS = {"short": 1, "long": 60}  # copies of the bench's 8-token prompt

ratio("beam, history read once (long prompt)", "beam, own caches (long prompt)", 1.2)
ratio("beam, history read once (short prompt)", "beam, own caches (short prompt)")

pytestmark = pytest.mark.skipif(
    not decode_step.available(), reason="no C compiler for the decoding kernels"
)


@pytest.fixture(scope="module", autouse=True)
def _threads():
    with torch_threads(int(THREADS) if THREADS else 1, "cpu"):
        yield


@pytest.fixture(scope="module")
def model():
    return quantize_model(bench_model("gpt2-124m"), "int8")


@contextlib.contextmanager
def _own_caches():
    """Beam search as before: no slot known to be shared."""
    saved = beam._History.reorder, beam._History.shared
    beam._History.reorder = lambda self, order, length: 0
    beam._History.shared = lambda self: 0
    try:
        yield
    finally:
        beam._History.reorder, beam._History.shared = saved


RESULTS: dict[tuple[str, bool], list] = {}


@pytest.mark.parametrize("prompt", list(PROMPTS))
@pytest.mark.parametrize("shared", [True, False], ids=["once", "own"])
def test_beam_search(benchmark, recorder, model, prompt, shared):
    benchmark.group = f"beam, {prompt} prompt"
    ids = PROMPT * PROMPTS[prompt]
    search = get_registry().samplers.create("beam", {"num_beams": 4})

    def run():
        with contextlib.nullcontext() if shared else _own_caches():
            out = generate_tokens(
                model, [ids], search, max_new_tokens=NEW_TOKENS, eos_id=None
            )
        RESULTS[prompt, shared] = [(r.new_ids, r.score) for r in out]
        return sum(len(r.new_ids) for r in out)

    with torch.inference_mode():
        tokens = benchmark.pedantic(run, rounds=3, warmup_rounds=1, iterations=1)
    name = "history read once" if shared else "own caches"
    recorder(benchmark, f"beam, {name} ({prompt} prompt)", tokens)
    other = RESULTS.get((prompt, not shared))
    assert other is None or other == RESULTS[prompt, shared]  # same search
