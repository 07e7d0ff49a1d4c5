"""Training precisions (``precision``): what each one computes in, and what a
device needs for it.

- ``fp32``: everything in float32 (the book's numbers).
- ``bf16-mixed`` / ``fp16-mixed``: float32 weights and optimizer;
  ``torch.autocast`` runs the matrix products (and the other ops on its lists)
  in bf16/fp16, casting inputs op by op. fp16 adds a gradient scaler
  (Micikevicius et al., 2018, "Mixed precision training").
- ``bf16-true`` (litgpt's name): the parameters are cast to bf16 once per
  forward pass, so the forward and backward passes, activations included, run
  in bf16 with no per-op casts; the gradients flow back through the cast into
  float32 master weights, which AdamW (float32 state) updates, so small updates
  are not lost to bf16's 8-bit mantissa. Checkpoints hold the float32 weights.
  Under FSDP the same thing is FSDP's mixed-precision policy (parameters
  gathered in bf16, gradients reduced in float32).

Torch-free at import: the settings and the command line list the names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from gptkit.errors import SettingError

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Precision:
    """One ``precision`` value: its autocast dtype (the ``*-mixed`` ones) or
    the dtype the parameters are cast to for compute (``bf16-true``), as the
    names of :data:`gptkit.core.device.DTYPES`."""

    name: str
    summary: str
    autocast: str | None = None
    compute: str | None = None

    @property
    def grad_scaler(self) -> bool:
        """fp16 needs a gradient scaler (its exponent range is narrow)."""
        return self.autocast == "fp16"

    @property
    def matmul_dtype(self) -> str:
        """The dtype the matrix products run in (whose peak MFU is against)."""
        return self.autocast or self.compute or "fp32"


#: Every precision, by name (the order of ``--help``).
PRECISIONS: dict[str, Precision] = {
    p.name: p
    for p in (
        Precision("fp32", "float32 weights, activations and optimizer"),
        Precision(
            "bf16-mixed",
            "float32 weights and AdamW; autocast runs matrix products in bf16",
            autocast="bf16",
        ),
        Precision(
            "bf16-true",
            "bf16 parameters and activations in forward and backward; float32"
            " master weights and AdamW",
            compute="bf16",
        ),
        Precision(
            "fp16-mixed",
            "float32 weights and AdamW; autocast to fp16, with a gradient scaler",
            autocast="fp16",
        ),
    )
}


def get_precision(name: str) -> Precision:
    """The precision called ``name``; an error listing the choices otherwise."""
    try:
        return PRECISIONS[name]
    except KeyError:
        raise SettingError(
            f"unknown {{precision}} {name!r}; choose one of {', '.join(PRECISIONS)}"
        ) from None


def check_device(precision: Precision, device: torch.device) -> None:
    """Refuse a precision the device cannot run, in one line."""
    import torch

    kind = device.type
    if precision.autocast is not None and not torch.amp.is_autocast_available(kind):
        raise SettingError(f"{{precision}} {precision.name}: no autocast on {kind}")
    half = precision.autocast or precision.compute
    if kind == "cuda" and half == "bf16" and not torch.cuda.is_bf16_supported():
        raise SettingError(
            f"{{precision}} {precision.name}: this GPU has no bfloat16; use fp16-mixed"
        )
    if kind == "mps" and half == "bf16" and not _mps_has_bf16():
        raise SettingError(
            f"{{precision}} {precision.name}: this Mac's MPS backend has no bfloat16"
        )


def cpu_bf16_warning(precision: Precision, device: torch.device) -> str | None:
    """One warning line for bf16 training on a CPU that emulates bf16 (no
    AVX512-BF16, no AMX-BF16); None elsewhere."""
    from gptkit.system import cpu

    half = precision.autocast or precision.compute
    if device.type != "cpu" or half != "bf16" or cpu.has_bf16_arithmetic():
        return None
    return (
        f"warning: this CPU has no bf16 arithmetic (no avx512_bf16 or amx_bf16):"
        f" {precision.name} is emulated here and usually slower than --precision"
        " fp32 (`gptkit bench training` measures both)"
    )


def _mps_has_bf16() -> bool:
    import torch

    try:
        torch.ones(1, device="mps", dtype=torch.bfloat16)
    except (RuntimeError, TypeError):
        return False
    return True
