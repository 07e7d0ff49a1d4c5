"""Decoding speed: every installed sampler on a 124M-shaped GPT-2 (random
weights, tied head, fp32, an 8-token prompt, 200 new tokens), against the book's
no-cache loop and transformers' ``generate`` on identical weights, plus bf16
against fp32 — all in one run, reported as ratios.

    pytest benchmarks/test_sampling.py --benchmark-only
    GPTKIT_BENCH_PRESET=tiny GPTKIT_BENCH_TOKENS=50 pytest benchmarks/test_sampling.py

Threads follow ``gptkit bench``: one on the CPU (``GPTKIT_BENCH_THREADS=0`` for
torch's default), see ``gptkit.bench.measure``.
"""

from __future__ import annotations

import os

import pytest
import torch

from benchmarks.conftest import ratio
from gptkit.bench.measure import torch_threads
from gptkit.bench.runners import (
    PROMPT,
    SAMPLER_OPTIONS,
    bench_model,
    gptkit_runner,
    no_cache_runner,
    transformers_runner,
    transformers_twin,
)
from gptkit.core.registry import get_registry

PRESET = os.environ.get("GPTKIT_BENCH_PRESET", "gpt2-124m")
NEW_TOKENS = int(os.environ.get("GPTKIT_BENCH_TOKENS", "200"))
ROUNDS = int(os.environ.get("GPTKIT_BENCH_ROUNDS", "2"))
THREADS = os.environ.get("GPTKIT_BENCH_THREADS")

ratio("gptkit greedy", "no-cache greedy (book)", 5.0)
for _mode in ("greedy", "top-p", "beam"):
    ratio(f"gptkit {_mode}", f"transformers {_mode}", 1.5)
ratio("gptkit greedy bf16", "gptkit greedy", 1.6)


@pytest.fixture(scope="module", autouse=True)
def _threads():
    with torch_threads(int(THREADS) if THREADS else None, "cpu"):
        yield


@pytest.fixture(scope="module")
def model():
    return bench_model(PRESET)


def _bench(benchmark, recorder, name, run):
    tokens = benchmark.pedantic(run, rounds=ROUNDS, warmup_rounds=1, iterations=1)
    recorder(benchmark, name, tokens)


def _runnable_samplers() -> list[str]:
    """Every installed sampler that runs with its defaults (speculative
    decoding needs a draft model: measured by ``gptkit bench sampling``)."""
    registry = get_registry().samplers
    return [
        n
        for n in registry.names()
        if not getattr(registry.get(n), "required_options", ())
    ]


@pytest.mark.parametrize("sampler_name", _runnable_samplers())
def test_gptkit_sampler(benchmark, recorder, model, sampler_name):
    benchmark.group = "samplers"
    sampler = get_registry().samplers.create(
        sampler_name, SAMPLER_OPTIONS.get(sampler_name, {})
    )
    _bench(
        benchmark,
        recorder,
        f"gptkit {sampler_name}",
        gptkit_runner(model, sampler, PROMPT, NEW_TOKENS),
    )


def test_no_cache_greedy(benchmark, recorder, model):
    benchmark.group = "baselines"
    _bench(
        benchmark,
        recorder,
        "no-cache greedy (book)",
        no_cache_runner(model, PROMPT, NEW_TOKENS),
    )


@pytest.mark.parametrize("mode", ["greedy", "top-p", "beam"])
def test_transformers(benchmark, recorder, model, mode):
    pytest.importorskip("transformers")
    benchmark.group = "baselines"
    twin = transformers_twin(model)
    _bench(
        benchmark,
        recorder,
        f"transformers {mode}",
        transformers_runner(twin, mode, PROMPT, NEW_TOKENS),
    )


def test_gptkit_greedy_bf16(benchmark, recorder):
    benchmark.group = "dtype"
    model = bench_model(PRESET, dtype="bf16")
    greedy = get_registry().samplers.create("greedy")
    _bench(
        benchmark,
        recorder,
        "gptkit greedy bf16",
        gptkit_runner(model, greedy, PROMPT, NEW_TOKENS),
    )


def test_outputs_agree(model):
    """The contenders do the same work: our greedy ids equal transformers'."""
    from gptkit.core.generate import generate_tokens

    greedy = get_registry().samplers.create("greedy")
    ours = generate_tokens(model, [PROMPT], greedy, max_new_tokens=20, eos_id=None)[
        0
    ].new_ids
    twin = transformers_twin(model)
    ids = torch.tensor([PROMPT])
    with torch.inference_mode():
        theirs = twin.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=20,
            min_new_tokens=20,
            do_sample=False,
            pad_token_id=50256,
        )
    assert ours == theirs[0, len(PROMPT) :].tolist()
