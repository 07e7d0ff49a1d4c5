"""Device and dtype choice (``--device auto|cpu|cuda|mps``, ``--dtype``)."""

from __future__ import annotations

import torch

from gptkit.errors import GptkitError

DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then Apple's MPS, then the CPU (as the book does)."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise GptkitError("--device cuda: no CUDA device is available")
    if name == "mps" and not torch.backends.mps.is_available():
        raise GptkitError("--device mps: Apple's MPS backend is not available")
    if name not in DEVICES:
        raise GptkitError(
            f"unknown device {name!r}; choose one of {', '.join(DEVICES)}"
        )
    return torch.device(name)


def resolve_dtype(name: str) -> torch.dtype:
    try:
        return DTYPES[name]
    except KeyError:
        raise GptkitError(
            f"unknown dtype {name!r}; choose one of {', '.join(DTYPES)}"
        ) from None
