"""Linear layers with int8 / int4 weights and the kernels that run them.

Backends (a quantizer option):

- ``native``: gptkit's AVX2 kernels (:mod:`gptkit.plugins.quantizers.native`)
  for float32 activations of up to :data:`NATIVE_MAX_ROWS` rows on the CPU —
  decoding; longer inputs (a prompt's prefill) dequantize and use the float
  matrix product, which is compute-bound there anyway.
- ``aten``: PyTorch's packed CPU kernels ``torch._weight_int8pack_mm`` and
  ``torch._weight_int4pack_mm_for_cpu`` (vectorised for AVX-512 CPUs).
- ``torch``: dequantize, then ``F.linear`` — any device and dtype; under
  ``torch.compile`` the conversion fuses into the product (gpt-fast's form).
- ``auto``: ``native`` on the CPU when the kernels can be built here, else
  ``torch``.

Under ``torch.compile`` the native kernels run as the custom operators
``gptkit::int8_linear`` / ``gptkit::int4_linear`` (opaque to the compiler).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gptkit.plugins.quantizers import formats, native

BACKENDS = ("auto", "native", "aten", "torch")
#: Activation rows up to which the native kernels are used (a decoding step of
#: a batch, a speculative verification); longer inputs are compute-bound.
NATIVE_MAX_ROWS = 16


def _rows(x: Tensor) -> tuple[Tensor, int]:
    flat = x.reshape(-1, x.shape[-1])  # (B*T, K)
    return (flat if flat.is_contiguous() else flat.contiguous()), flat.shape[0]


def _ptr(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _int8_native(
    x: Tensor, weight: Tensor, scale: Tensor, bias: Tensor | None
) -> Tensor:
    flat, m = _rows(x)
    n, k = weight.shape
    y = torch.empty(m, n, dtype=torch.float32)
    native.loaded().gk_int8_linear(  # type: ignore[union-attr]
        flat.data_ptr(), m, k, weight.data_ptr(), scale.data_ptr(), _ptr(bias),
        y.data_ptr(), n, torch.get_num_threads(),
    )  # fmt: skip
    return y.reshape(*x.shape[:-1], n)


def _int4_native(
    x: Tensor, weight: Tensor, scale: Tensor, zero: Tensor, bias: Tensor | None
) -> Tensor:
    flat, m = _rows(x)
    n, k = weight.shape[0], weight.shape[1] * 2
    group = k // scale.shape[1]
    y = torch.empty(m, n, dtype=torch.float32)
    status = native.loaded().gk_int4_linear(  # type: ignore[union-attr]
        flat.data_ptr(), m, k, weight.data_ptr(), scale.data_ptr(),
        zero.data_ptr(), group, _ptr(bias), y.data_ptr(), n, torch.get_num_threads(),
    )  # fmt: skip
    if status != 0:
        raise MemoryError("int4 kernel: out of memory")
    return y.reshape(*x.shape[:-1], n)


if hasattr(torch.library, "custom_op"):  # torch >= 2.4: visible to torch.compile

    @torch.library.custom_op("gptkit::int8_linear", mutates_args=())
    def int8_linear_op(
        x: Tensor, weight: Tensor, scale: Tensor, bias: Tensor | None
    ) -> Tensor:
        return _int8_native(x, weight, scale, bias)

    @int8_linear_op.register_fake
    def _(x: Tensor, weight: Tensor, scale: Tensor, bias: Tensor | None) -> Tensor:
        return x.new_empty(*x.shape[:-1], weight.shape[0])

    @torch.library.custom_op("gptkit::int4_linear", mutates_args=())
    def int4_linear_op(
        x: Tensor, weight: Tensor, scale: Tensor, zero: Tensor, bias: Tensor | None
    ) -> Tensor:
        return _int4_native(x, weight, scale, zero, bias)

    @int4_linear_op.register_fake
    def _(
        x: Tensor, weight: Tensor, scale: Tensor, zero: Tensor, bias: Tensor | None
    ) -> Tensor:
        return x.new_empty(*x.shape[:-1], weight.shape[0])


def _compiling() -> bool:
    compiler = getattr(torch, "compiler", None)
    return bool(compiler is not None and compiler.is_compiling())


class _QuantizedLinear(nn.Module):
    """Shared parts: shapes, bias, the backend choice."""

    in_features: int
    out_features: int
    bias: Tensor | None

    def __init__(self, in_features: int, out_features: int, backend: str) -> None:
        super().__init__()
        if backend in ("auto", "native"):
            native.library()  # build (once) now, not inside a traced forward
        self.in_features = in_features
        self.out_features = out_features
        self.backend = backend

    def _native_ok(self, x: Tensor) -> bool:
        if self.backend not in ("auto", "native") or x.device.type != "cpu":
            return False
        if x.dtype != torch.float32 or self.in_features % 16:
            return False
        rows = x.numel() // self.in_features
        return rows <= NATIVE_MAX_ROWS and native.loaded() is not None

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features},"
            f" bias={self.bias is not None}, backend={self.backend}"
        )


class Int8Linear(_QuantizedLinear):
    """``y = x W^T + b`` with ``W = weight * scale[:, None]``: int8 weights, one
    float32 scale per output channel (see :mod:`.formats`)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        backend: str = "auto",
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(in_features, out_features, backend)
        shape = (out_features, in_features)
        self.register_buffer(
            "weight", torch.empty(shape, dtype=torch.int8, device=device)
        )
        self.register_buffer("scale", torch.empty(out_features, device=device))
        self.register_buffer(
            "bias", torch.empty(out_features, device=device) if bias else None
        )

    @classmethod
    def from_linear(cls, linear: nn.Linear, backend: str = "auto") -> Int8Linear:
        weight = linear.weight
        layer = cls(
            linear.in_features,
            linear.out_features,
            linear.bias is not None,
            backend,
            device="meta",
        )
        layer.weight, layer.scale = formats.quantize_int8(weight)
        if linear.bias is not None:
            layer.bias = linear.bias.detach().float().clone()
        return layer

    def forward(self, x: Tensor) -> Tensor:
        if self._native_ok(x):
            if _compiling():
                return torch.ops.gptkit.int8_linear(
                    x, self.weight, self.scale, self.bias
                )
            return _int8_native(x, self.weight, self.scale, self.bias)
        if self.backend == "aten" and x.device.type == "cpu":
            flat, _ = _rows(x)
            y = torch._weight_int8pack_mm(flat, self.weight, self.scale.to(x.dtype))
            y = y.reshape(*x.shape[:-1], self.out_features)
        else:  # the conversion fuses into the product under torch.compile
            y = F.linear(x, self.weight.to(x.dtype)) * self.scale.to(x.dtype)
        return y if self.bias is None else y + self.bias.to(x.dtype)


class Int4Linear(_QuantizedLinear):
    """``y = x W^T + b`` with int4 weights, a scale and a zero point per group of
    ``group_size`` inputs (see :mod:`.formats`)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        group_size: int = 64,
        backend: str = "auto",
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(in_features, out_features, backend)
        self.group_size = group_size
        groups = in_features // group_size
        packed = (out_features, in_features // 2)
        self.register_buffer(
            "weight", torch.empty(packed, dtype=torch.uint8, device=device)
        )
        self.register_buffer("scale", torch.empty(out_features, groups, device=device))
        self.register_buffer("zero", torch.empty(out_features, groups, device=device))
        self.register_buffer(
            "bias", torch.empty(out_features, device=device) if bias else None
        )
        self._aten: tuple[Tensor, Tensor] | None = None

    @classmethod
    def from_linear(
        cls, linear: nn.Linear, group_size: int, backend: str = "auto"
    ) -> Int4Linear:
        layer = cls(
            linear.in_features,
            linear.out_features,
            linear.bias is not None,
            group_size,
            backend,
            device="meta",
        )
        layer.weight, layer.scale, layer.zero = formats.quantize_int4(
            linear.weight, group_size
        )
        if linear.bias is not None:
            layer.bias = linear.bias.detach().float().clone()
        return layer

    def _aten_packed(self) -> tuple[Tensor, Tensor]:
        """PyTorch's int4 CPU format, built on first use: (packed weight,
        scales-and-zeros (G, N', 2)), N' = N padded to a multiple of 16;
        aten computes ``(q - 8) * scale + zero'``, so ``zero' = zero + 8 scale``."""
        if self._aten is None:
            n = self.out_features
            padded = -(-n // 16) * 16
            q = formats.unpack_int4(self.weight).to(torch.int32)
            q = F.pad(q, (0, 0, 0, padded - n))
            packed = torch._convert_weight_to_int4pack_for_cpu(q, 1)
            scale = F.pad(self.scale, (0, 0, 0, padded - n))
            zero = F.pad(self.zero + 8 * self.scale, (0, 0, 0, padded - n))
            pairs = torch.stack([scale, zero], dim=-1).transpose(0, 1).contiguous()
            self._aten = (packed, pairs)
        return self._aten

    def forward(self, x: Tensor) -> Tensor:
        if self._native_ok(x):
            if _compiling():
                return torch.ops.gptkit.int4_linear(
                    x, self.weight, self.scale, self.zero, self.bias
                )
            return _int4_native(x, self.weight, self.scale, self.zero, self.bias)
        if self.backend == "aten" and x.device.type == "cpu":
            packed, pairs = self._aten_packed()
            flat, _ = _rows(x)
            y = torch._weight_int4pack_mm_for_cpu(
                flat, packed, self.group_size, pairs.to(x.dtype)
            )[:, : self.out_features]
            y = y.reshape(*x.shape[:-1], self.out_features)
        else:
            w = formats.dequantize_int4(self.weight, self.scale, self.zero, x.dtype)
            y = F.linear(x, w)
        return y if self.bias is None else y + self.bias.to(x.dtype)
