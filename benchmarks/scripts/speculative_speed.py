# ruff: noqa: E402, E501  (a measurement script: set-up before imports, table rows)
"""Speculative vs greedy on the models the tests train (python-docs, dense vocab):
target 2 layers x 64 wide, draft 1 layer x 32 wide; 20 prompts x 40 tokens, best of 3.

Run from the repository root (it reuses the tests' trained models):

    python -m benchmarks.scripts.speculative_speed
"""

import time

import torch

torch.set_num_threads(1)
from tests.trained_models import draft_model, split_ids, target_model

from gptkit.core.generate import generate_tokens
from gptkit.core.registry import get_registry
from gptkit.plugins.samplers.speculative import Speculative

t, d = target_model(), draft_model()
held = split_ids()[1]
prompts = [held[i * 37 : i * 37 + 6].tolist() for i in range(20)]
greedy = get_registry().samplers.create("greedy")


def run(s):
    best = 1e9
    for _ in range(3):
        a = time.perf_counter()
        out = [
            generate_tokens(t, [p], s, max_new_tokens=40, eos_id=None)[0].new_ids
            for p in prompts
        ]
        best = min(best, time.perf_counter() - a)
    return best, out


for k in (2, 4):
    g_s, g_out = run(greedy)
    spec = Speculative.with_draft(d, k=k)
    s_s, s_out = run(spec)
    st = spec.stats()
    print(
        f"k={k}: greedy {800 / g_s:.0f} tok/s, speculative {800 / s_s:.0f} tok/s, speed-up {g_s / s_s:.2f}x, acceptance {st['acceptance_rate']:.0%}, tokens/round {st['tokens_per_round']:.2f}, identical {g_out == s_out}",
        flush=True,
    )
