"""What this CPU can run: its model name and the instruction-set flags the
quantized kernels care about, read once per process from ``/proc/cpuinfo``
(Linux), plus torch's own view (``torch.backends.cpu.get_cpu_capability()``).

The one reader of the CPU's features: the kernels choose by it
(:mod:`gptkit.plugins.quantizers`), the benchmarks report it
(:mod:`gptkit.bench.measure`), ``--dtype bf16`` and ``--precision bf16-*`` warn
by it. Torch is imported only by :func:`features` (for the capability), so the
registry and ``gptkit --help`` stay torch-free.
"""

from __future__ import annotations

import functools
import hashlib
import platform
from pathlib import Path
from typing import Any

#: The flags reported (``gptkit bench`` header and JSON) and used to pick kernels.
FLAGS = (
    "avx2",
    "fma",
    "f16c",
    "avx_vnni",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
    "amx_fp16",
)


@functools.cache
def _cpuinfo() -> tuple[str, frozenset[str]]:
    model = platform.processor() or platform.machine() or "unknown"
    flags: set[str] = set()
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return model, frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model in ("unknown", platform.machine()):
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
    if platform.machine().lower() not in ("x86_64", "amd64"):
        flags = set()  # the x86 kernels need an x86 CPU whatever the flags say
    return model, frozenset(flags)


def model_name() -> str:
    return _cpuinfo()[0]


def flags() -> frozenset[str]:
    """All of the CPU's flags (x86-64 Linux; empty elsewhere)."""
    return _cpuinfo()[1]


def has(*names: str) -> bool:
    return set(names) <= flags()


def has_bf16_arithmetic() -> bool:
    """Whether this CPU computes in bf16 (AVX512-BF16 or AMX-BF16) rather than
    emulating it with float32 conversions."""
    return has("avx512_bf16") or has("amx_bf16")


@functools.cache
def torch_capability() -> str:
    """torch's CPU capability (``AVX512``, ``AVX2``, ``DEFAULT``...)."""
    import torch

    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except (AttributeError, RuntimeError):
        return "unknown"


def features() -> dict[str, Any]:
    """``{"model", "flags": [those of FLAGS present], "torch_capability"}``."""
    present = flags()
    return {
        "model": model_name(),
        "flags": [f for f in FLAGS if f in present],
        "torch_capability": torch_capability(),
    }


def fingerprint() -> str:
    """A short hash of the CPU model and all of its flags: what a measured
    kernel choice is valid for."""
    text = model_name() + "|" + " ".join(sorted(flags()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
