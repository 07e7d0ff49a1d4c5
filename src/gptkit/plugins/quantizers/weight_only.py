"""The built-in quantizers: weight-only int8 and int4 (see :mod:`.formats` for
the schemes and :mod:`.linear` for the kernels)."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from gptkit.core.interfaces import Quantizer
from gptkit.errors import GptkitError
from gptkit.plugins.quantizers import fused, native
from gptkit.plugins.quantizers.linear import BACKENDS, KERNELS, Int4Linear, Int8Linear

_BACKEND = {
    "help": "auto (the backend measured fastest for each layer shape on this CPU,"
    " cached), native (the same among gptkit's kernels), avx512vnni / avx2"
    " (gptkit's integer dot-product kernels, int8 activations), fma-avx2"
    " (gptkit's weight-only kernels, float activations), aten (PyTorch's packed"
    " CPU kernels), torch (dequantize + matmul, any device), reference (the"
    " integer kernels' arithmetic in PyTorch)",
    "choices": BACKENDS,
}


def _check_backend(backend: str) -> None:
    if backend == "native" and not native.available("int8"):
        raise GptkitError(
            "backend native needs an x86-64 CPU with AVX2 and FMA and a C compiler"
            " (cc, gcc or clang); use backend=auto"
        )
    if backend in native.KERNEL_SETS and native.library(backend) is None:
        needs = " ".join(native.KERNEL_SETS[backend].needs)
        raise GptkitError(
            f"backend {backend} needs a CPU with {needs} and a C compiler"
            " (cc, gcc or clang); use backend=auto"
        )


class Int8(Quantizer):
    """Per-output-channel symmetric int8 weights; activations keep their dtype."""

    name = "int8"
    summary = "Weight-only int8, one symmetric scale per output channel."

    @dataclass(frozen=True)
    class Options:
        backend: str = field(default="auto", metadata=_BACKEND)

    def quantize_linear(self, linear: nn.Module, name: str) -> nn.Module:
        _check_backend(self.options.backend)
        return Int8Linear.from_linear(linear, self.options.backend)  # type: ignore[arg-type]

    def fused_step(self, model: nn.Module) -> fused.FusedStep | None:
        return _fused_step(model, self.options.backend)


class Int4(Quantizer):
    """Group-wise asymmetric int4 weights (two per byte); activations keep their
    dtype.

    The output head stays int8 unless ``head=int4``: it is the layer whose
    error reaches the logits unfiltered, and on the models trained here int4
    there costs 6-12% perplexity against 0.1% for every other layer in int4
    (measured; llama.cpp's 4-bit formats likewise keep the output matrix at
    6 bits). It is ~30% of GPT-2 124M's weights, so int8 there costs speed.
    """

    name = "int4"
    summary = "Weight-only int4, a scale and a zero point per group of inputs."

    @dataclass(frozen=True)
    class Options:
        group_size: int = field(
            default=64,
            metadata={
                "help": "inputs sharing one scale and zero point",
                "choices": (32, 64, 128, 256),
            },
        )
        head: str = field(
            default="int8",
            metadata={
                "help": "format of the output head (out_head): int8 or int4",
                "choices": ("int8", "int4"),
            },
        )
        backend: str = field(default="auto", metadata=_BACKEND)

    def quantize_linear(self, linear: nn.Module, name: str) -> nn.Module:
        _check_backend(self.options.backend)
        if name == "out_head" and self.options.head == "int8":
            return Int8Linear.from_linear(linear, self.options.backend)  # type: ignore[arg-type]
        group = self.options.group_size
        k = linear.in_features
        if k % group:
            raise GptkitError(
                f"int4 group_size {group} does not divide a layer's {k} inputs;"
                " choose a group size that divides the model's widths"
            )
        return Int4Linear.from_linear(linear, group, self.options.backend)  # type: ignore[arg-type]

    def fused_step(self, model: nn.Module) -> fused.FusedStep | None:
        return _fused_step(model, self.options.backend)


def _fused_step(model: nn.Module, backend: str) -> fused.FusedStep | None:
    """A GPT-2, Llama 3 or Qwen3 model's whole decoding step in C
    (:mod:`.fused`) where the layers run gptkit's integer kernels; other
    backends keep the model's forward."""
    return fused.fused_step(model) if backend in ("auto", "native", *KERNELS) else None
