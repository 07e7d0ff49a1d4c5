"""Training throughput of gptkit against a book-style baseline, in one run.

The book's configuration: ``gpt2-124m`` (untied head, dropout 0.1) at context
256, batch 2, AdamW(lr 4e-4, weight decay 0.1), on the CPU. Every variant
trains on the same fixed batch of random token ids:

- ``baseline-default-malloc``: benchmarks/book_baseline.py (explicit-mask
  attention, hand-written LayerNorm and GELU, ``AdamW(foreach=False)``, fp32)
  in a fresh process with glibc's default allocator settings;
- ``baseline``: the same in this process, after ``tune_cpu_allocator()`` (the
  mallopt setting gptkit applies on Linux): the fair comparison;
- ``gptkit-fp32`` and ``gptkit-bf16-mixed``: ``Trainer.train_step`` (fused
  attention and AdamW; autocast to bf16 for the second).

Tokens/s use the fastest round (the least disturbed on a shared machine) and
the median. MFU is the model's FLOPs per token (6 x the parameters of the
matrix products + 12 x layers x context x width for attention, PaLM's appendix
B) times tokens/s, over this machine's measured matrix-product peak (the
fastest of several square fp32 / bf16 ``torch.mm``). ``GPTKIT_BENCH_ROUNDS``
sets the measured rounds (default 3), ``GPTKIT_BENCH_PRESET`` the model (a
quick check: ``tiny``), ``GPTKIT_BENCH_THREADS`` torch's intra-op threads for
every variant. On a CPU shared with other jobs, each parallel operator waits for
its threads to be scheduled (milliseconds per operator), which swamps the work
itself; one thread then measures the computation.

    pytest benchmarks/test_training.py --benchmark-only -s
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from benchmarks.book_baseline import book_setup, book_train_step
from benchmarks.conftest import RESULTS as SHARED
from benchmarks.conftest import ratio
from gptkit.core.config import get_preset
from gptkit.core.data import make_loaders
from gptkit.core.device import tune_cpu_allocator
from gptkit.core.model import GPTModel
from gptkit.core.settings import TrainSettings
from gptkit.core.train import Trainer
from gptkit.plugins.schedulers.schedules import Constant

PRESET = os.environ.get("GPTKIT_BENCH_PRESET", "gpt2-124m")
CFG = get_preset(PRESET).replace(context_length=256)
BATCH = 2
TOKENS = BATCH * CFG.context_length
ROUNDS = int(os.environ.get("GPTKIT_BENCH_ROUNDS", "3"))
THREADS = os.environ.get("GPTKIT_BENCH_THREADS")
if THREADS:  # every variant (and the baseline's process) gets the same number
    torch.set_num_threads(int(THREADS))
TARGETS = {"gptkit-fp32": 1.3, "gptkit-bf16-mixed": 2.5}
RESULTS: dict[str, dict[str, float]] = {}
PREFIX = f"train {PRESET} ctx256 b2: "  # names in the shared summary
for _name, _target in TARGETS.items():
    ratio(PREFIX + _name, PREFIX + "baseline", _target)
ratio(PREFIX + "baseline", PREFIX + "baseline-default-malloc")


def flops_per_token(model: nn.Module) -> float:
    matmul = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))
    attention = 12 * CFG.n_layers * CFG.context_length * CFG.emb_dim
    return 6.0 * matmul + attention


def record(name: str, seconds: list[float], **extra: float) -> dict[str, float]:
    best, median = min(seconds), sorted(seconds)[len(seconds) // 2]
    row = {
        "tokens_per_s_best": TOKENS / best,
        "tokens_per_s_median": TOKENS / median,
        **extra,
    }
    RESULTS[name] = row
    SHARED[PREFIX + name] = row["tokens_per_s_best"]
    return row


def measure_peak(dtype: torch.dtype, sizes: tuple[int, ...], repeats: int = 5) -> float:
    """The fastest square ``torch.mm`` of ``dtype`` over ``sizes``, in FLOP/s."""
    best = 0.0
    for n in sizes:
        a = torch.randn(n, n).to(dtype)
        b = torch.randn(n, n).to(dtype)
        torch.mm(a, b)
        for _ in range(repeats):
            started = time.perf_counter()
            torch.mm(a, b)
            best = max(best, 2 * n**3 / (time.perf_counter() - started))
    return best


def peaks() -> dict[str, float]:
    return {
        "fp32_flops": measure_peak(torch.float32, (2048, 4096)),
        "bf16_flops": measure_peak(torch.bfloat16, (4096, 8192)),
    }


def test_matmul_peak(benchmark):
    """fp32 and bf16 (AMX where present) matrix-product peaks of this CPU,
    measured again at the end (the higher counts: a busy moment only slows)."""
    tune_cpu_allocator()
    RESULTS["peak"] = benchmark.pedantic(peaks, rounds=1, iterations=1)
    benchmark.extra_info.update(RESULTS["peak"])


def test_baseline_default_malloc(benchmark):
    """The baseline in a fresh process, glibc's default allocator settings."""
    script = Path(__file__).with_name("book_baseline.py")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}

    def run() -> dict:
        out = subprocess.run(
            [sys.executable, str(script), "--preset", PRESET, "--steps", str(ROUNDS)]
            + (["--threads", THREADS] if THREADS else []),
            capture_output=True,
            text=True,
            check=True,
            env=env,
        )
        return json.loads(out.stdout.splitlines()[-1])

    data = benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info.update(record("baseline-default-malloc", data["step_seconds"]))


def _timed(benchmark, step) -> list[float]:
    """Seconds of each measured round (after one warm-up round)."""
    benchmark.pedantic(step, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    return list(benchmark.stats.stats.data)


def test_baseline(benchmark):
    tune_cpu_allocator()
    model, optimizer, x, y = book_setup(CFG, BATCH)
    times = _timed(benchmark, lambda: book_train_step(model, optimizer, x, y))
    row = record("baseline", times, flops_per_token=flops_per_token(model))
    benchmark.extra_info.update(row)


@pytest.mark.parametrize("precision", ["fp32", "bf16-mixed"])
def test_gptkit(benchmark, precision):
    tune_cpu_allocator()
    _, _, x, y = book_setup(CFG, BATCH)
    torch.manual_seed(123)
    model = GPTModel(CFG)
    data = make_loaders(
        "Every effort moves you. " * 3000, context_length=256, batch_size=BATCH
    )
    trainer = Trainer(
        model,
        data,
        TrainSettings(lr=4e-4, weight_decay=0.1, precision=precision),
        device=torch.device("cpu"),
        scheduler=Constant(),
    )
    batches = itertools.repeat((x, y))
    times = _timed(benchmark, lambda: trainer.train_step(batches))
    row = record(f"gptkit-{precision}", times, flops_per_token=flops_per_token(model))
    benchmark.extra_info.update(row)


def test_summary(benchmark):
    """Ratios against the baseline of this run, MFU, and the targets, printed
    (run with -s) and in the shared summary (timed only so that
    --benchmark-only runs it)."""
    needed = {"peak", "baseline", *TARGETS}
    if not needed <= RESULTS.keys():
        pytest.skip("run the whole file with --benchmark-only")
    benchmark.pedantic(_summary, rounds=1, iterations=1)


def _summary() -> None:
    again = peaks()
    peak = {k: max(v, again[k]) for k, v in RESULTS["peak"].items()}
    base = RESULTS["baseline"]
    lines = [
        f"threads: {torch.get_num_threads()}",
        f"matmul peak: fp32 {peak['fp32_flops'] / 1e9:.0f} GFLOP/s,"
        f" bf16 {peak['bf16_flops'] / 1e9:.0f} GFLOP/s",
    ]
    misses = []
    for name, row in RESULTS.items():
        if name == "peak":
            continue
        ratio = row["tokens_per_s_best"] / base["tokens_per_s_best"]
        ratio_median = row["tokens_per_s_median"] / base["tokens_per_s_median"]
        achieved = row["tokens_per_s_best"] * base["flops_per_token"]
        mfu32 = achieved / peak["fp32_flops"]
        mfu16 = achieved / peak["bf16_flops"]
        lines.append(
            f"{name:24s} {row['tokens_per_s_best']:8.1f} tok/s (median"
            f" {row['tokens_per_s_median']:.1f})  x{ratio:.2f} (median x"
            f"{ratio_median:.2f})  MFU {mfu32:.1%} of fp32 peak, {mfu16:.1%} of"
            " bf16 peak"
        )
        if name in TARGETS and ratio < TARGETS[name]:
            misses.append(f"{name} x{ratio:.2f} < x{TARGETS[name]}")
    if misses:  # reported, not failed: a busy machine is not a regression
        lines.append("BELOW TARGET: " + "; ".join(misses))
    print("\n" + "\n".join(lines))
