"""Linear layers with int8 / int4 weights and the kernels that run them.

Backends (a quantizer option, ``-o backend=NAME`` / ``int8:backend=NAME``):

- ``auto`` (default): on the CPU, for float32 activations of up to
  :data:`NATIVE_MAX_ROWS` rows (a decoding step, a speculative verification),
  the backend measured fastest for the layer's shape on this machine and
  thread count (:mod:`gptkit.plugins.quantizers.tuning`: timed once, cached by
  CPU and version); longer inputs (a prompt's prefill) and other devices
  dequantize and use the float matrix product (compute-bound there anyway).
- ``native``: like ``auto``, choosing among gptkit's kernel sets only.
- ``avx512vnni``, ``avx2``: gptkit's integer dot-product kernels
  (:mod:`.native`, ``kernels/qdot.c``): the activations are quantized to int8
  per call in blocks of 32, products accumulate in int32, scaled once per block.
- ``fma-avx2``: gptkit's weight-only kernels: each weight widened to float32,
  float activations (exact activations, arithmetic-bound).
- ``aten``: PyTorch's packed CPU kernels ``torch._weight_int8pack_mm`` and
  ``torch._weight_int4pack_mm_for_cpu``.
- ``torch``: dequantize, then ``F.linear`` — any device and dtype; under
  ``torch.compile`` the conversion fuses into the product (gpt-fast's form).
- ``reference``: the integer kernels' arithmetic in PyTorch (activations
  quantized in blocks of 32, then float products), for any number of rows and
  any device: what the tests compare the kernels with, and how perplexity with
  quantized activations is measured on whole sequences.

Under ``torch.compile`` the native kernels run as the custom operators
``gptkit::int8_linear`` / ``gptkit::int4_linear`` (opaque to the compiler).
"""

from __future__ import annotations

import ctypes
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gptkit.plugins.quantizers import formats, native, tuning

KERNELS = ("avx512vnni", "avx2", "fma-avx2")
#: The integer dot-product kernel sets, which read weights repacked at load.
PACKED = ("avx512vnni", "avx2")
BACKENDS = ("auto", "native", *KERNELS, "aten", "torch", "reference")
#: Activation rows up to which the native kernels are used (a decoding step of
#: a batch, a speculative verification); longer inputs are compute-bound.
NATIVE_MAX_ROWS = 16
#: Activation block of the integer kernels (one int8 scale per block).
ACT_BLOCK = 32


def available_backends() -> list[str]:
    """The fixed backends that can run on this machine's CPU."""
    return [*native.available("int8"), "aten", "torch", "reference"]


def kernel_call(layer: nn.Module) -> tuple[Any, int, tuple[int, ...]] | None:
    """The kernel call ``layer`` (a quantized or bf16 layer) repeats for a
    decoding step, for a caller in C (:mod:`gptkit.plugins.quantizers.fused`):
    ``(plan, address, extras)`` — ``plan``, the layer's ``_call``, is the
    object that changes whenever the kernel, its threads or its weights do
    (compare it with ``is``) — or None until a decoding step has chosen and
    run a kernel."""
    call = layer._call
    if (
        call is None
        or call[0] != torch.get_num_threads()
        or layer._buffers["weight"].data_ptr() != call[1]  # type: ignore[union-attr]
        or call[2].restype is not ctypes.c_int
    ):
        return None
    address = ctypes.cast(call[2], ctypes.c_void_p).value
    return call, int(address or 0), tuple(int(a or 0) for a in call[3])


def _rows(x: Tensor) -> tuple[Tensor, int]:
    flat = x.reshape(-1, x.shape[-1])  # (B*T, K)
    return (flat if flat.is_contiguous() else flat.contiguous()), flat.shape[0]


def _ptr(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _int8_native(
    kernel: str, x: Tensor, weight: Tensor, scale: Tensor, bias: Tensor | None, n: int
) -> Tensor:
    """``weight``: the stored (N, K) int8 for ``fma-avx2``, else the kernel
    set's packed tiles (:func:`formats.tile_int8`)."""
    x = x if x.is_contiguous() else x.contiguous()
    k = x.shape[-1]
    y = x.new_empty((*x.shape[:-1], n))
    lib = native.loaded(kernel)
    args = (x.data_ptr(), x.numel() // k, k, weight.data_ptr(), scale.data_ptr(),
            _ptr(bias), y.data_ptr(), n, torch.get_num_threads())  # fmt: skip
    fn = lib.gk_int8_linear if kernel == "fma-avx2" else lib.gk_q8_linear  # type: ignore[union-attr]
    if fn(*args) != 0:
        raise MemoryError("int8 kernel: out of memory")
    return y


def _int4_native(
    kernel: str,
    x: Tensor,
    weight: Tensor,
    scale: Tensor,
    zero: Tensor,
    bias: Tensor | None,
    n: int,
    group: int,
) -> Tensor:
    """``weight``, ``scale``, ``zero``: as stored for ``fma-avx2``; else
    ``weight`` is the kernel set's packed tiles, which hold the scales and zero
    points too (:func:`formats.tile_int4`; ``scale`` and ``zero`` unused)."""
    x = x if x.is_contiguous() else x.contiguous()
    k = x.shape[-1]
    y = x.new_empty((*x.shape[:-1], n))
    lib = native.loaded(kernel)
    rows, threads = x.numel() // k, torch.get_num_threads()
    if kernel == "fma-avx2":
        status = lib.gk_int4_linear(  # type: ignore[union-attr]
            x.data_ptr(), rows, k, weight.data_ptr(), scale.data_ptr(),
            zero.data_ptr(), group, _ptr(bias), y.data_ptr(), n, threads,
        )  # fmt: skip
    else:
        status = lib.gk_q4_linear(  # type: ignore[union-attr]
            x.data_ptr(), rows, k, weight.data_ptr(), group, _ptr(bias), y.data_ptr(),
            n, threads,
        )  # fmt: skip
    if status != 0:
        raise MemoryError("int4 kernel: out of memory")
    return y


def quantize_activations(x: Tensor) -> tuple[Tensor, Tensor]:
    """The integer kernels' activation quantization in PyTorch: ``x`` (..., K)
    -> (q (..., K/32, 32) integral float32 in -127..127, d (..., K/32)) with
    ``d = max|x_b| / 127`` and ``q = round(x * (1 / d))`` per block of 32."""
    xb = x.float().reshape(*x.shape[:-1], -1, ACT_BLOCK)
    d = xb.abs().amax(dim=-1) / 127.0
    inv = torch.where(d > 0, 1.0 / d, torch.zeros_like(d))
    return torch.round(xb * inv[..., None]), d


def _dequantized_activations(x: Tensor) -> Tensor:
    q, d = quantize_activations(x)
    return (q * d[..., None]).reshape(x.shape)


def _int8_reference(
    x: Tensor, weight: Tensor, scale: Tensor, bias: Tensor | None
) -> Tensor:
    y = F.linear(_dequantized_activations(x), weight.float()) * scale.float()
    y = y if bias is None else y + bias.float()
    return y.to(x.dtype)


def _int4_reference(
    x: Tensor, weight: Tensor, scale: Tensor, zero: Tensor, bias: Tensor | None
) -> Tensor:
    n, groups = scale.shape
    q = formats.unpack_int4(weight).reshape(n, groups, -1).float()
    w = (q * scale.float()[..., None]).reshape(n, -1)
    xsum = x.float().reshape(*x.shape[:-1], groups, -1).sum(dim=-1)  # exact
    y = F.linear(_dequantized_activations(x), w) + F.linear(xsum, zero.float())
    y = y if bias is None else y + bias.float()
    return y.to(x.dtype)


if hasattr(torch.library, "custom_op"):  # torch >= 2.4: visible to torch.compile

    @torch.library.custom_op("gptkit::int8_linear", mutates_args=())
    def int8_linear_op(
        x: Tensor, weight: Tensor, scale: Tensor, bias: Tensor | None, n: int,
        kernel: str,
    ) -> Tensor:  # fmt: skip
        return _int8_native(kernel, x, weight, scale, bias, n)

    @int8_linear_op.register_fake
    def _(
        x: Tensor, weight: Tensor, scale: Tensor, bias: Tensor | None, n: int,
        kernel: str,
    ) -> Tensor:  # fmt: skip
        return x.new_empty(*x.shape[:-1], n)

    @torch.library.custom_op("gptkit::int4_linear", mutates_args=())
    def int4_linear_op(
        x: Tensor, weight: Tensor, scale: Tensor, zero: Tensor, bias: Tensor | None,
        n: int, group: int, kernel: str,
    ) -> Tensor:  # fmt: skip
        return _int4_native(kernel, x, weight, scale, zero, bias, n, group)

    @int4_linear_op.register_fake
    def _(
        x: Tensor, weight: Tensor, scale: Tensor, zero: Tensor, bias: Tensor | None,
        n: int, group: int, kernel: str,
    ) -> Tensor:  # fmt: skip
        return x.new_empty(*x.shape[:-1], n)


class _FrozenQuantizedProduct(torch.autograd.Function):
    """``x W^T`` for a frozen quantized ``W`` that gradients flow through to
    ``x`` (QLoRA: adapters before the layer train): ``W`` is dequantized in the
    forward pass and again in the backward pass, never kept, so training holds
    the integer weights only (Dettmers et al. 2023, "QLoRA", section 3)."""

    @staticmethod
    def forward(ctx, x: Tensor, layer: _QuantizedLinear) -> Tensor:  # type: ignore[override]
        ctx.layer = layer
        return F.linear(x, layer.dequantized_weight(x.dtype))

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        return grad @ ctx.layer.dequantized_weight(grad.dtype), None


def _compiling() -> bool:
    compiler = getattr(torch, "compiler", None)
    return bool(compiler is not None and compiler.is_compiling())


class _QuantizedLinear(nn.Module):
    """Shared parts: shapes, bias, the backend choice."""

    kind = ""
    #: the rows the kernels read and write (gptkit.plugins.quantizers.fused)
    kernel_dtype = torch.float32
    in_features: int
    out_features: int
    bias: Tensor | None

    def __init__(self, in_features: int, out_features: int, backend: str) -> None:
        super().__init__()
        if backend in ("auto", "native"):
            native.available(self.kind)  # build (once) now, not in a traced forward
        elif backend in KERNELS:
            native.library(backend)
        self.in_features = in_features
        self.out_features = out_features
        self.backend = backend
        self._chosen: dict[int, str | None] = {}  # threads -> measured backend
        # The weights in the layout of each kernel set used (see _packed), the
        # last one made, and the stored weights they were made from.
        self._packs: dict[str, tuple[Tensor, ...]] = {}
        self._pack_kernel: str | None = None
        self._pack_key: int | None = None
        self._call: tuple[Any, ...] | None = None  # see forward

    def _tiles(self, kernel: str) -> tuple[Tensor, ...]:
        raise NotImplementedError

    def __getstate__(self) -> dict[str, Any]:
        # A copy (deepcopy, pickle) chooses its kernel call anew: ctypes
        # functions neither copy nor pickle.
        return {**self.__dict__, "_call": None}

    def _forward(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        """A decoding step repeats the last kernel call's plan (same threads,
        same weights, float32 rows on the CPU): one ctypes call, none of the
        backend choice's checks; anything else takes :meth:`_forward`."""
        if torch.compiler.is_compiling():  # (first: nothing below is traced)
            return self._forward(x)
        trained = self._differentiable(x)  # QLoRA: a gradient must reach x
        if trained is not None:
            return trained
        if (
            x.dtype in (torch.bfloat16, torch.float16)
            and x.is_cpu
            and x.numel() <= NATIVE_MAX_ROWS * self.in_features
        ):
            # A bf16/fp16 model's decoding rows: the integer kernels quantize
            # the activations to int8 anyway, so widening the few rows to
            # float32 costs nothing, where PyTorch's half-precision product
            # of the dequantized weight ran ~9x slower than the kernel.
            return self.forward(x.float()).to(x.dtype)
        call = self._call
        if call is not None:
            threads = torch.get_num_threads()
            k = self.in_features
            if (
                call[0] == threads
                and x.dtype == torch.float32
                and x.is_cpu
                and x.numel() <= NATIVE_MAX_ROWS * k
                and x.is_contiguous()
                and self._buffers["weight"].data_ptr() == call[1]  # type: ignore[union-attr]
            ):
                n = self.out_features
                y = x.new_empty((*x.shape[:-1], n))
                rows = x.numel() // k
                if call[2](x.data_ptr(), rows, k, *call[3], y.data_ptr(), n, threads):
                    raise MemoryError(f"{self.kind} kernel: out of memory")
                return y
        return self._forward(x)

    def _remember(self, fn: Any, args: tuple[Any, ...]) -> None:
        """Keep the kernel call just made (its function and the arguments
        between the activations' shape and the output) for :meth:`forward`."""
        threads = torch.get_num_threads()
        self._call = (threads, self.weight.data_ptr(), fn, args)

    def kernel_call(self) -> tuple[Any, int, tuple[int, ...]] | None:
        """See :func:`kernel_call`."""
        return kernel_call(self)

    def _packed(self, kernel: str) -> tuple[Tensor, ...]:
        """The weights repacked for ``kernel`` (:data:`PACKED`), made on first
        use and again when the stored weights were replaced or loaded into
        (``load_state_dict``); the stored weights (and so the state dict and
        saved checkpoints) keep their format. A layer run at thread counts
        whose choices differ keeps both packs (no repack at each switch;
        :func:`tuning.choose` keeps one where the two are close). Under
        torch.compile a pack made in eager mode is used as is."""
        pack = self._packs.get(kernel)
        if pack is not None and (
            _compiling() or self._pack_key == self.weight.data_ptr()
        ):
            return pack
        return self._repack(kernel)

    @torch.compiler.disable
    def _repack(self, kernel: str) -> tuple[Tensor, ...]:
        self._call = None
        if self._pack_key != self.weight.data_ptr():
            self._packs = {}  # made from other weights: free them first
        self._packs[kernel] = self._tiles(kernel)
        self._pack_kernel, self._pack_key = kernel, self.weight.data_ptr()
        return self._packs[kernel]

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        # the weights change in place
        self._packs, self._pack_kernel, self._call = {}, None, None
        super()._load_from_state_dict(*args, **kwargs)

    def _lanes(self, kernel: str) -> int:
        return int(native.loaded(kernel).gk_lanes())  # type: ignore[union-attr]

    def _group(self) -> int:
        return 0

    def dequantized_weight(self, dtype: torch.dtype = torch.float32) -> Tensor:
        """The float weight (out, in) the integers stand for."""
        raise NotImplementedError

    def _differentiable(self, x: Tensor) -> Tensor | None:
        """``x W^T + b`` through :class:`_FrozenQuantizedProduct` when a
        gradient must reach ``x`` (the kernels have no backward pass)."""
        if not (x.requires_grad and torch.is_grad_enabled()):
            return None
        y = _FrozenQuantizedProduct.apply(x, self)
        return y if self.bias is None else y + self.bias.to(x.dtype)

    def _path(self, x: Tensor) -> str:
        """The backend this input runs on (see the module docs)."""
        backend = self.backend
        if backend in ("torch", "reference"):
            return backend
        cpu_fp32 = x.device.type == "cpu" and x.dtype == torch.float32
        small = x.numel() // self.in_features <= NATIVE_MAX_ROWS
        if backend in KERNELS:
            ok = cpu_fp32 and small and self.in_features % ACT_BLOCK == 0
            return backend if ok and native.loaded(backend) is not None else "torch"
        if backend == "aten":
            return "aten" if x.device.type == "cpu" else "torch"
        if not (cpu_fp32 and small and self.in_features % ACT_BLOCK == 0):
            return "torch"
        threads = torch.get_num_threads()
        chosen = self._chosen.get(threads)
        if chosen is None:
            chosen = tuning.choose(
                self.kind,
                self.out_features,
                self.in_features,
                self._group(),
                threads,
                native_only=backend == "native",
                measure=not _compiling(),
                keep=self._pack_kernel,
            )
            if not _compiling():
                self._chosen[threads] = chosen
        if chosen in KERNELS and native.loaded(chosen) is None:
            chosen = None
        return chosen or "torch"

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features},"
            f" bias={self.bias is not None}, backend={self.backend}"
        )


class Int8Linear(_QuantizedLinear):
    """``y = x W^T + b`` with ``W = weight * scale[:, None]``: int8 weights, one
    float32 scale per output channel (see :mod:`.formats`)."""

    kind = "int8"

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

    def dequantized_weight(self, dtype: torch.dtype = torch.float32) -> Tensor:
        return self.weight.to(dtype) * self.scale.to(dtype)[:, None]

    def _tiles(self, kernel: str) -> tuple[Tensor, ...]:
        unsigned = kernel == "avx512vnni"
        return (formats.tile_int8(self.weight, self._lanes(kernel), unsigned),)

    def _forward(self, x: Tensor) -> Tensor:
        path = self._path(x)
        if path in KERNELS:
            w = self._packed(path)[0] if path in PACKED else self.weight
            n = self.out_features
            if _compiling():
                return torch.ops.gptkit.int8_linear(
                    x, w, self.scale, self.bias, n, path
                )
            y = _int8_native(path, x, w, self.scale, self.bias, n)
            lib = native.loaded(path)
            fn = lib.gk_int8_linear if path == "fma-avx2" else lib.gk_q8_linear  # type: ignore[union-attr]
            self._remember(fn, (w.data_ptr(), self.scale.data_ptr(), _ptr(self.bias)))
            return y
        if path == "reference":
            return _int8_reference(x, self.weight, self.scale, self.bias)
        if path == "aten":
            flat, _ = _rows(x)
            y = torch._weight_int8pack_mm(flat, self.weight, self.scale.to(x.dtype))
            y = y.reshape(*x.shape[:-1], self.out_features)
        else:  # the conversion fuses into the product under torch.compile
            y = F.linear(x, self.weight.to(x.dtype)) * self.scale.to(x.dtype)
        return y if self.bias is None else y + self.bias.to(x.dtype)


class Int4Linear(_QuantizedLinear):
    """``y = x W^T + b`` with int4 weights, a scale and a zero point per group of
    ``group_size`` inputs (see :mod:`.formats`)."""

    kind = "int4"

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

    def _group(self) -> int:
        return self.group_size

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

    def dequantized_weight(self, dtype: torch.dtype = torch.float32) -> Tensor:
        return formats.dequantize_int4(self.weight, self.scale, self.zero, dtype)

    def _tiles(self, kernel: str) -> tuple[Tensor, ...]:
        lanes = self._lanes(kernel)
        return (formats.tile_int4(self.weight, self.scale, self.zero, lanes),)

    def _forward(self, x: Tensor) -> Tensor:
        path = self._path(x)
        if path in KERNELS:
            w = self._packed(path)[0] if path in PACKED else self.weight
            n, group = self.out_features, self.group_size
            if _compiling():
                return torch.ops.gptkit.int4_linear(
                    x, w, self.scale, self.zero, self.bias, n, group, path
                )
            y = _int4_native(path, x, w, self.scale, self.zero, self.bias, n, group)
            lib = native.loaded(path)
            if path == "fma-avx2":
                ptrs = (w.data_ptr(), self.scale.data_ptr(), self.zero.data_ptr())
                self._remember(lib.gk_int4_linear, (*ptrs, group, _ptr(self.bias)))  # type: ignore[union-attr]
            else:
                self._remember(lib.gk_q4_linear, (w.data_ptr(), group, _ptr(self.bias)))  # type: ignore[union-attr]
            return y
        if path == "reference":
            return _int4_reference(x, self.weight, self.scale, self.zero, self.bias)
        if path == "aten":
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


def timing_layers(
    kind: str, n: int, k: int, group: int, backends: list[str], copies: int = 1
) -> list[dict]:
    """``copies`` sets of backend -> a layer of random weights of this shape
    with that backend (the layers of one set share their weights; each set has
    its own copy). The global RNG is left as it was: a measurement taken in
    the middle of training (the first decode of a QLoRA run's sample) must not
    change the data order, or a resumed run (measured already, cached) would
    diverge from the uninterrupted one."""
    import copy

    import torch
    from torch import nn

    gen = torch.Generator().manual_seed(0)
    lin = nn.Linear(k, n, bias=True, device="meta").to_empty(device="cpu")
    with torch.no_grad():
        lin.weight.normal_(0.0, 0.02, generator=gen)
        lin.bias.normal_(0.0, 0.02, generator=gen)
    if kind == "int8":
        base = Int8Linear.from_linear(lin, "torch")
    else:
        base = Int4Linear.from_linear(lin, group, "torch")
    sets = []
    for i in range(copies):
        weights = base if i == 0 else copy.deepcopy(base)  # cheaper than quantizing
        layers = {}
        for b in backends:
            layer = copy.copy(weights)  # shares the tensors
            layer.__dict__["backend"] = b
            layer.__dict__["_chosen"] = {}
            layers[b] = layer
        sets.append(layers)
    return sets


tuning.LAYER_FACTORY = timing_layers
