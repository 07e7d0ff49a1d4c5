"""bf16 weights for decoding on the CPU: the ``bf16`` quantizer and its layer.

Where the CPU has AVX512-BF16 (``vdpbf16ps``: pairs of bf16 products summed in
float32), :class:`Bf16Linear` multiplies with gptkit's kernel
(``kernels/bf16.c``) for decode-sized inputs (up to 16 rows): the weights cross
the memory bus as 2 bytes each and are used as they are. PyTorch's own bf16
matrix-vector product on the CPU converts on the way and was measured slower
than float32 (docs/fast-inference.md). Longer inputs, other devices and CPUs
without the kernel use ``F.linear``.

``--dtype bf16`` on such a CPU uses this layer for every linear layer
(:func:`gptkit.formats.models.accelerate_bf16`); where bf16 is emulated (no
AVX512-BF16 or AMX-BF16), that says so in one warning line.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gptkit.core.interfaces import Quantizer
from gptkit.errors import GptkitError
from gptkit.plugins.quantizers import fused, native
from gptkit.plugins.quantizers.linear import kernel_call
from gptkit.system import cpu

KERNEL = "avx512bf16"
MAX_ROWS = 16


def has_bf16_arithmetic() -> bool:
    """Whether this CPU computes in bf16 (AVX512-BF16 or AMX-BF16) rather than
    emulating it with float32 conversions."""
    return cpu.has_bf16_arithmetic()


def kernel_available() -> bool:
    return native.library(KERNEL) is not None


def pack_tiles(weight: Tensor) -> Tensor:
    """(N, K) bf16 -> the kernel's layout (``kernels/bf16.c``): tiles of 16
    output channels (zero channels past N), within a tile each pair of inputs'
    16 x 2 weights side by side: (ceil(N / 16), K / 2, 16, 2)."""
    n, k = weight.shape
    padded = F.pad(weight.detach(), (0, 0, 0, -n % 16))
    return padded.view(-1, 16, k // 2, 2).permute(0, 2, 1, 3).contiguous()


class Bf16Linear(nn.Module):
    """``y = x W^T + b`` with ``W`` (and ``b``) stored in bfloat16."""

    #: the rows the kernel reads and writes (gptkit.plugins.quantizers.fused)
    kernel_dtype = torch.bfloat16

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        backend: str = "auto",
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        if backend in ("auto", KERNEL):
            native.library(KERNEL)  # build now, not in a traced forward
        self.in_features, self.out_features, self.backend = (
            in_features,
            out_features,
            backend,
        )
        self.register_buffer(
            "weight",
            torch.empty(out_features, in_features, dtype=torch.bfloat16, device=device),
        )
        self.register_buffer(
            "bias",
            torch.empty(out_features, dtype=torch.bfloat16, device=device)
            if bias
            else None,
        )
        self._pack: Tensor | None = None
        self._pack_key: int | None = None
        # the last kernel call (threads, weight address, function, extras),
        # for the fused decoding step (linear.kernel_call)
        self._call: tuple[Any, ...] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_call": None}  # ctypes functions do not copy

    def kernel_call(self) -> tuple[Any, int, tuple[int, ...]] | None:
        return kernel_call(self)

    @classmethod
    def from_linear(cls, linear: nn.Linear, backend: str = "auto") -> Bf16Linear:
        layer = cls(
            linear.in_features,
            linear.out_features,
            linear.bias is not None,
            backend,
            device="meta",
        )
        layer.weight = linear.weight.detach().to(torch.bfloat16)
        if linear.bias is not None:
            layer.bias = linear.bias.detach().to(torch.bfloat16)
        return layer

    def _kernel_ok(self, x: Tensor) -> bool:
        if self.backend not in ("auto", KERNEL) or x.device.type != "cpu":
            return False
        if self.in_features % 32 or x.numel() // self.in_features > MAX_ROWS:
            return False
        return native.loaded(KERNEL) is not None

    def _packed(self) -> Tensor:
        """The weights in the kernel's tiles (:func:`pack_tiles`), made on
        first use and again when the stored weights were replaced; the stored
        weights (the state dict) keep their layout."""
        key = self.weight.data_ptr()
        if self._pack_key != key:
            self._pack, self._call = None, None  # free the old one first
            self._pack = pack_tiles(self.weight)
            self._pack_key = key
        return self._pack  # type: ignore[return-value]

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        self._pack_key, self._call = None, None  # the weights change in place
        super()._load_from_state_dict(*args, **kwargs)

    def forward(self, x: Tensor) -> Tensor:
        if self._kernel_ok(x):
            flat = x.reshape(-1, self.in_features)
            if flat.dtype != torch.bfloat16 or not flat.is_contiguous():
                flat = flat.to(torch.bfloat16).contiguous()
            m, threads = flat.shape[0], torch.get_num_threads()
            y = torch.empty(m, self.out_features, dtype=torch.bfloat16)
            fn = native.loaded(KERNEL).gk_bf16_linear  # type: ignore[union-attr]
            extras = (self._packed().data_ptr(),
                      None if self.bias is None else self.bias.data_ptr())  # fmt: skip
            fn(flat.data_ptr(), m, self.in_features, *extras, y.data_ptr(),
               self.out_features, threads)  # fmt: skip
            self._call = (threads, self.weight.data_ptr(), fn, extras)
            return y.reshape(*x.shape[:-1], self.out_features).to(x.dtype)
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.weight.to(x.dtype), bias)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features},"
            f" bias={self.bias is not None}, backend={self.backend}"
        )


class Bf16(Quantizer):
    """bfloat16 weights (half of float32's bytes), multiplied in bf16 with
    float32 sums where the CPU has AVX512-BF16."""

    name = "bf16"
    summary = "bf16 weights; AVX512-BF16 dot products for decoding on the CPU."

    @dataclass(frozen=True)
    class Options:
        backend: str = field(
            default="auto",
            metadata={
                "help": "auto (the avx512bf16 kernel where it runs, else torch),"
                " avx512bf16, torch (F.linear)",
                "choices": ("auto", KERNEL, "torch"),
            },
        )

    def quantize_linear(self, linear: nn.Module, name: str) -> nn.Module:
        if self.options.backend == KERNEL and not kernel_available():
            raise GptkitError(
                "backend avx512bf16 needs a CPU with AVX512-BF16 and a C compiler;"
                " use backend=auto"
            )
        return Bf16Linear.from_linear(linear, self.options.backend)  # type: ignore[arg-type,arg-type]

    def fused_step(self, model: nn.Module) -> fused.FusedStep | None:
        """A GPT-2, Llama 3 or Qwen3 model's whole decoding step in C
        (:mod:`.fused`) on the kernel."""
        return fused.fused_step(model) if self.options.backend != "torch" else None


_WARNED = False


def emulation_warning() -> str | None:
    """One line for a CPU that emulates bf16, with the speed of a bf16 matrix
    product against float32 measured here and now (a decode-shaped one); None
    where the CPU has bf16 arithmetic."""
    if has_bf16_arithmetic():
        return None
    w = torch.randn(3072, 768)
    x = torch.randn(1, 768)
    times = {}
    for dtype in (torch.float32, torch.bfloat16):
        wd, xd = w.to(dtype), x.to(dtype)
        F.linear(xd, wd)
        start = time.perf_counter()
        for _ in range(5):
            F.linear(xd, wd)
        times[dtype] = time.perf_counter() - start
    ratio = times[torch.float32] / times[torch.bfloat16]
    return (
        "warning: this CPU has no bf16 arithmetic (no avx512_bf16 or amx_bf16):"
        f" bf16 is emulated, a decode-shaped bf16 product ran {ratio:.2f}x float32"
        " here just now; for faster decoding use --quantize int8 or int4"
        " (see `gptkit bench kernels`)"
    )


def cpu_support() -> tuple[bool, str | None]:
    """(whether bf16 weights decode faster with this quantizer here, a warning
    line for a CPU that emulates bf16 — printed once per process)."""
    global _WARNED
    fast = kernel_available()
    note = None
    if not _WARNED:
        note = emulation_warning()
        _WARNED = note is not None
    return fast, note


Bf16.cpu_support = staticmethod(cpu_support)  # type: ignore[attr-defined]
