"""Where a training step's time goes, from ``torch.profiler``.

:func:`profile_step` runs one step under the profiler and splits its time two
ways:

- **phases** (on the CPU): the ranges ``Trainer.train_step`` labels
  (``gptkit.forward``, ``gptkit.backward``, ``gptkit.optimizer``, which
  includes zeroing the gradients and clipping); ``other`` is the rest of the
  step (the loss's transfer to the host, the processes agreeing on it). On a
  GPU the ranges time kernel launches, not kernels, so they are left out;
- **operators**: every operator's own (self) time, grouped into matrix
  products, attention, normalisation, activation, loss, embedding, optimizer,
  dtype casts and the rest (elementwise arithmetic, memory).

On a GPU the device (kernel) time is used, else the CPU time. With the model
FLOPs of the step, the time in matrix products gives their achieved rate, to
set against the machine's matmul peak.

Torch is imported when used.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

PHASES = ("forward", "backward", "optimizer")

#: category -> operator-name fragments (``aten::`` names), first match wins.
_CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("optimizer", ("adam", "_foreach_", "clip_grad", "_amp_foreach")),
    ("loss", ("cross_entropy", "log_softmax", "nll_loss")),
    ("attention", ("scaled_dot_product", "flash_attention", "efficient_attention",
                   "softmax", "masked_fill", "triu")),
    ("matmul", ("::mm", "::addmm", "::bmm", "::baddbmm", "::matmul", "::linear",
                "mkldnn_", "::_mm", "gemm")),
    ("norm", ("layer_norm", "::var", "::mean", "::sqrt", "rsqrt")),
    ("activation", ("gelu", "::tanh", "::pow")),
    ("embedding", ("embedding",)),
    ("casts", ("::to", "::_to_copy", "::copy_", "::type_as")),
)  # fmt: skip
CATEGORIES = (*(name for name, _ in _CATEGORIES), "other")


def categorize(op_name: str) -> str:
    """The category of an operator (see the module docs)."""
    name = op_name.lower()
    for category, fragments in _CATEGORIES:
        if any(fragment in name for fragment in fragments):
            return category
    return "other"


def profile_step(
    step: Callable[[], Any], device: Any, matmul_flops: float | None = None
) -> dict[str, Any]:
    """Run ``step`` once under ``torch.profiler``; its seconds, the share of
    each phase and operator category, and (given the step's ``matmul_flops``)
    the rate achieved inside matrix products, in TFLOP/s."""
    from torch.profiler import ProfilerActivity, profile

    from gptkit.bench.measure import sync

    on_gpu = getattr(device, "type", str(device)) == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu else [])
    with profile(activities=activities) as prof:
        started = time.perf_counter()
        step()
        sync(device)
        seconds = time.perf_counter() - started
    events = prof.events()

    def own(event: Any) -> float:  # microseconds
        if on_gpu:
            return float(getattr(event, "self_device_time_total", 0.0))
        return float(event.self_cpu_time_total)

    by_category = dict.fromkeys(CATEGORIES, 0.0)
    for event in events:
        if event.name.startswith("gptkit.") or event.name.startswith("ProfilerStep"):
            continue
        by_category[categorize(event.name)] += own(event)
    total = sum(by_category.values()) or 1.0
    phases = dict.fromkeys(PHASES, 0.0)
    for event in events:
        if event.name.startswith("gptkit."):
            phase = event.name.removeprefix("gptkit.")
            if phase in phases:
                phases[phase] += event.cpu_time_total / 1e6
    labelled = sum(phases.values())
    result: dict[str, Any] = {
        "seconds": seconds,
        "time_source": "device (kernel) time" if on_gpu else "CPU time",
        "categories": {k: v / total for k, v in by_category.items()},
        "phases": None,
        "matmul_tflops": None,
    }
    if labelled > 0 and not on_gpu:
        shares = {k: v / seconds for k, v in phases.items()}
        shares["other"] = max(0.0, 1.0 - sum(shares.values()))
        result["phases"] = shares
    matmul_seconds = by_category["matmul"] / 1e6
    if matmul_flops and matmul_seconds > 0:
        result["matmul_tflops"] = matmul_flops / matmul_seconds / 1e12
    return result
