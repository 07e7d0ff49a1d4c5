"""Training throughput of gptkit's step against a book-style baseline, in one run.

The book's configuration: ``gpt2-124m`` (untied head, dropout 0.1) at context
256, batch 2, AdamW(lr 4e-4, weight decay 0.1), on the CPU. Every variant
trains on the same fixed batch of random token ids, with the same torch threads
(torch's default; ``GPTKIT_BENCH_THREADS`` sets another number for all, the
baseline's own process included):

- ``baseline-default-malloc``: the book-style step (``gptkit.bench.book_baseline``:
  explicit-mask attention, hand-written LayerNorm and GELU,
  ``AdamW(foreach=False)``, fp32) in a fresh process with glibc's default
  allocator settings;
- ``baseline``: the same in this process, after ``tune_cpu_allocator()`` (the
  mallopt setting gptkit applies on Linux): the fair comparison;
- ``gptkit-fp32``, ``gptkit-bf16-mixed``, ``gptkit-bf16-true``:
  ``Trainer.train_step``, the step of ``gptkit train``, with its fused AdamW and
  the precision.

A bf16 variant whose step would take longer than ``GPTKIT_BENCH_MAX_STEP_S``
(default 120 s) at this machine's measured bf16 matmul peak is skipped with
that estimate (a CPU without bfloat16 units runs bf16 products ~50x slower than
fp32); ``GPTKIT_BENCH_PRESET=tiny`` runs every variant on a small model.

Tokens/s use the fastest round (the least disturbed on a shared machine) and
the median. MFU is the model's FLOPs per token (6 x the parameters of the
matrix products + 12 x layers x context x width for attention, PaLM's appendix
B) times tokens/s, over the measured matmul peak of the dtype the variant's
products run in. ``GPTKIT_BENCH_ROUNDS`` sets the measured rounds (default 3).

    pytest benchmarks/test_training.py --benchmark-only -s
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks.conftest import RESULTS as SHARED
from benchmarks.conftest import ratio
from gptkit.bench.book_baseline import book_setup, book_train_step
from gptkit.bench.limits import (
    matmul_parameters,
    measure_matmul,
    training_flops_per_token,
)
from gptkit.bench.training import batch_as_data
from gptkit.core.config import get_preset
from gptkit.core.model import GPTModel
from gptkit.core.precision import PRECISIONS
from gptkit.core.settings import TrainSettings
from gptkit.core.training.trainer import Trainer
from gptkit.core.weights import meta_model
from gptkit.plugins.schedulers.schedules import Constant
from gptkit.system.allocator import tune_cpu_allocator

PRESET = os.environ.get("GPTKIT_BENCH_PRESET", "gpt2-124m")
CFG = get_preset(PRESET).replace(context_length=256)
BATCH = 2
TOKENS = BATCH * CFG.context_length
ROUNDS = int(os.environ.get("GPTKIT_BENCH_ROUNDS", "3"))
MAX_STEP_S = float(os.environ.get("GPTKIT_BENCH_MAX_STEP_S", "120"))
THREADS = os.environ.get("GPTKIT_BENCH_THREADS")
if THREADS:  # every variant (and the baseline's process) gets the same number
    torch.set_num_threads(int(THREADS))
FLOPS_PER_TOKEN = training_flops_per_token(meta_model(CFG), CFG.context_length)
TARGETS = {"gptkit-fp32": 1.3, "gptkit-bf16-mixed": 2.5, "gptkit-bf16-true": 2.5}
RESULTS: dict[str, dict[str, float]] = {}
PREFIX = f"train {PRESET} ctx256 b2: "  # names in the shared summary
for _name, _target in TARGETS.items():
    ratio(PREFIX + _name, PREFIX + "baseline", _target)
ratio(PREFIX + "baseline", PREFIX + "baseline-default-malloc")


def record(name: str, seconds: list[float], dtype: str) -> dict[str, float]:
    best, median = min(seconds), sorted(seconds)[len(seconds) // 2]
    row = {
        "tokens_per_s_best": TOKENS / best,
        "tokens_per_s_median": TOKENS / median,
        "dtype": dtype,
    }
    RESULTS[name] = row
    SHARED[PREFIX + name] = row["tokens_per_s_best"]
    return row


def peaks() -> dict[str, float]:
    """fp32 and bf16 matmul peaks of this device, in FLOP/s."""
    return {d: measure_matmul("cpu", d) * 1e12 for d in ("fp32", "bf16")}


def test_matmul_peak(benchmark):
    """fp32 and bf16 (AMX where present) matrix-product peaks of this CPU,
    measured again at the end (the higher counts: a busy moment only slows)."""
    tune_cpu_allocator()
    RESULTS["peak"] = benchmark.pedantic(peaks, rounds=1, iterations=1)
    benchmark.extra_info.update(RESULTS["peak"])


def test_baseline_default_malloc(benchmark):
    """The baseline in a fresh process, glibc's default allocator settings."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}

    def run() -> dict:
        out = subprocess.run(
            [sys.executable, "-m", "gptkit.bench.book_baseline", "--preset", PRESET]
            + ["--steps", str(ROUNDS)]
            + (["--threads", THREADS] if THREADS else []),
            capture_output=True,
            text=True,
            check=True,
            env=env,
        )
        return json.loads(out.stdout.splitlines()[-1])

    data = benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info.update(
        record("baseline-default-malloc", data["step_seconds"], "fp32")
    )


def _timed(benchmark, step) -> list[float]:
    """Seconds of each measured round (after one warm-up round)."""
    benchmark.pedantic(step, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    return list(benchmark.stats.stats.data)


def test_baseline(benchmark):
    tune_cpu_allocator()
    model, optimizer, x, y = book_setup(CFG, BATCH)
    times = _timed(benchmark, lambda: book_train_step(model, optimizer, x, y))
    benchmark.extra_info.update(record("baseline", times, "fp32"))


@pytest.mark.parametrize("precision", ["fp32", "bf16-mixed", "bf16-true"])
def test_gptkit(benchmark, precision):
    dtype = PRECISIONS[precision].matmul_dtype
    if dtype != "fp32":
        _skip_when_too_slow(dtype)
    tune_cpu_allocator()
    _, _, x, y = book_setup(CFG, BATCH)
    torch.manual_seed(123)
    model = GPTModel(CFG)
    trainer = Trainer(
        model,
        batch_as_data(x),
        TrainSettings(lr=4e-4, weight_decay=0.1, precision=precision, max_new_tokens=0),
        device=torch.device("cpu"),
        scheduler=Constant(),
    )
    batches = itertools.repeat((x, y))
    times = _timed(benchmark, lambda: trainer.train_step(batches))
    benchmark.extra_info.update(record(f"gptkit-{precision}", times, dtype))


def _skip_when_too_slow(dtype: str) -> None:
    peak = RESULTS.get("peak", {}).get(dtype) or measure_matmul("cpu", dtype) * 1e12
    seconds = FLOPS_PER_TOKEN * TOKENS / peak
    if seconds > MAX_STEP_S:
        pytest.skip(
            f"a {dtype} step of {PRESET} would take at least {seconds:.0f} s here:"
            f" this CPU's measured {dtype} matmul peak is {peak / 1e9:.2f} GFLOP/s"
            " (no bfloat16 units); GPTKIT_BENCH_PRESET=tiny runs it on a small"
            " model, GPTKIT_BENCH_MAX_STEP_S raises the limit"
        )


def test_summary(benchmark):
    """Ratios against the baseline of this run, MFU, and the targets, printed
    (run with -s) and in the shared summary (timed only so that
    --benchmark-only runs it)."""
    if not {"peak", "baseline"} <= RESULTS.keys():
        pytest.skip("run the whole file with --benchmark-only")
    benchmark.pedantic(_summary, rounds=1, iterations=1)


def _summary() -> None:
    again = peaks()
    peak = {k: max(v, again[k]) for k, v in RESULTS["peak"].items()}
    base = RESULTS["baseline"]
    lines = [
        f"threads: {torch.get_num_threads()} (every variant, the baseline included)",
        f"matmul peak: fp32 {peak['fp32'] / 1e9:.1f} GFLOP/s,"
        f" bf16 {peak['bf16'] / 1e9:.2f} GFLOP/s",
        f"model: {PRESET}, {matmul_parameters(meta_model(CFG)) / 1e6:.1f}M matmul"
        f" parameters, {FLOPS_PER_TOKEN / 1e6:.0f} MFLOP per token",
    ]
    misses = []
    for name, row in RESULTS.items():
        if name == "peak":
            continue
        value = row["tokens_per_s_best"] / base["tokens_per_s_best"]
        value_median = row["tokens_per_s_median"] / base["tokens_per_s_median"]
        mfu = row["tokens_per_s_best"] * FLOPS_PER_TOKEN / peak[row["dtype"]]
        lines.append(
            f"{name:24s} {row['tokens_per_s_best']:8.1f} tok/s (median"
            f" {row['tokens_per_s_median']:.1f})  x{value:.2f} (median x"
            f"{value_median:.2f})  MFU {mfu:.1%} of the {row['dtype']} peak"
        )
        if name in TARGETS and value < TARGETS[name]:
            misses.append(f"{name} x{value:.2f} < x{TARGETS[name]}")
    if misses:  # reported, not failed: a busy machine is not a regression
        lines.append("BELOW TARGET: " + "; ".join(misses))
    print("\n" + "\n".join(lines))
