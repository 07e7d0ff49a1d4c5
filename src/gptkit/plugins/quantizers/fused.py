"""A quantized model's decoding step as one C call
(:mod:`gptkit.system.decode_step`): what the built-in int8, int4 and bf16
quantizers return from :meth:`Quantizer.fused_step`.

The step applies when a GPT-2 (:class:`~gptkit.core.model.GPTModel`), Llama 3
or Qwen3 model on the CPU decodes one token per row (up to 16 rows, every row
of the KV cache at the same length — greedy, sampling, beam search), with
gradients off, in eval mode, no hooks, every linear layer one of this
package's layers with a kernel (int8/int4 with float32 parameters and cache;
bf16 with bfloat16 ones), and each of them has already run a
decoding step (so its kernel is chosen: the first step takes the Python
path). Anything else returns None and the model's own forward runs. The
program is built on the first step of each cache and rebuilt when a kernel
choice, the thread count or any weight changes.

That check (every module, tensor and kernel plan the program reads, ~200
Python objects: ~0.2 ms cold after a step has streamed the weights through
the caches, 3-7% of a 124M step) runs in full on the first step of a
generation — another cache, or a position that does not follow the last
step's — after the thread count changes, and after any module, parameter or
buffer is registered anywhere (PyTorch's global registration hooks count
them). Steps in between trust it: the program holds every tensor it reads, so
their memory stays valid, and a weight swapped through ``.data`` in the middle
of a generation is seen from the next one.

Where the cache's rows share their first slots (``KVCache.shared``: beam
search's common history), the step's attention reads those once for all rows
(the same bits as each row reading its own copy).

The arithmetic is the Python path's: the same matrix-product kernels; the
norms, GELU / SwiGLU's gate, the rotary embedding and the residual adds in C,
which round like PyTorch's to within a few units in the last place (a bf16
program rounds to bf16 where PyTorch's bf16 forward does).
"""

from __future__ import annotations

import copy
import weakref
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules import module as torch_module

from gptkit.core.model import (
    GELU,
    GPTModel,
    KVCache,
    LayerNorm,
    MultiHeadAttention,
    TransformerBlock,
)
from gptkit.plugins.quantizers.linear import NATIVE_MAX_ROWS
from gptkit.system import decode_step

_DTYPES = {torch.float32: "float32", torch.bfloat16: "bfloat16"}


def fused_step(model: nn.Module) -> FusedStep | None:
    """The fused step of ``model`` where its architecture is GPT-2's, Llama 3's
    or Qwen3's, else None."""
    from gptkit.plugins.architectures.llama_model import LlamaModel

    if type(model) not in (GPTModel, LlamaModel) or not decode_step.available():
        return None
    return FusedStep(model)


_registrations = [0]  # modules, parameters and buffers registered (any model)


def _count_registration(*args: Any) -> None:
    _registrations[0] += 1


for _register in (
    torch_module.register_module_module_registration_hook,
    torch_module.register_module_parameter_registration_hook,
    torch_module.register_module_buffer_registration_hook,
):
    _register(_count_registration)


def _hooked(module: nn.Module) -> bool:
    return bool(module._forward_hooks or module._forward_pre_hooks)


def _global_hooks() -> bool:
    """Whether hooks are registered for every module (checked each step)."""
    m = torch_module
    return bool(m._global_forward_hooks or m._global_forward_pre_hooks)


class FusedStep:
    """Callable with :meth:`GPTModel.forward`'s arguments: the logits of a
    decoding step, or None where the step does not apply (module docs).
    Set on the model as ``model.fused_step`` by :func:`quantize_model`."""

    def __init__(self, model: nn.Module) -> None:
        self.model: Any = model  # a GPTModel or a LlamaModel
        self._program: decode_step.Program | None = None
        self._key: tuple[Any, ...] = ()
        self._calls: list[tuple[Any, Any]] = []  # (layer, its kernel plan)
        self._parts: list[tuple[nn.Module, str, Any]] = []  # (parent, name, child)
        self._tensors: list[tuple[Tensor, int]] = []  # (tensor, its address)
        self._buffers: list[Tensor] = []  # the activations
        self._failures, self._skip = 0, 0  # builds failed in a row; steps to skip
        self._dtype = torch.float32  # the program's activations and logits
        # the last step run: its cache, position, threads, registrations seen
        self._last: tuple[Any, int, int, int] = (None, -1, 0, -1)

    def __deepcopy__(self, memo: dict[int, Any]) -> FusedStep:
        # a copy's program would point into the original's tensors
        return FusedStep(copy.deepcopy(self.model, memo))

    def __getstate__(self) -> dict[str, Any]:
        return {"model": self.model}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["model"])  # type: ignore[misc]

    def __call__(
        self,
        in_idx: Tensor,
        cache: KVCache,
        position_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        logits_at: Tensor | None = None,
    ) -> Tensor | None:
        model = self.model
        if (
            position_ids is not None
            or attention_mask is not None
            or logits_at is not None
            or model.training
            or torch.is_grad_enabled()
            or cache.static
            or in_idx.dim() != 2
            or in_idx.shape[1] != 1
            or in_idx.shape[0] > NATIVE_MAX_ROWS
            or in_idx.dtype != torch.int64
            or in_idx.device.type != "cpu"
            or _global_hooks()
        ):
            return None
        pos = cache.lengths[0]
        if any(n != pos for n in cache.lengths) or pos >= cache.capacity:
            return None  # ragged rows; a full cache (the forward says so)
        rows = in_idx.shape[0]
        program = self._ready(cache, rows, pos)
        if program is None:
            return None
        tokens = in_idx if in_idx.is_contiguous() else in_idx.contiguous()
        logits = torch.empty((rows, 1, model.cfg.vocab_size), dtype=self._dtype)
        threads = torch.get_num_threads()
        shared = min(cache.shared, pos)  # rows' slots read once for all rows
        status = program.run(
            tokens.data_ptr(), rows, pos, logits.data_ptr(), threads, shared
        )
        if status == -2:
            return None  # a bad token id or position: the forward raises
        if status:
            error = MemoryError if status == -1 else RuntimeError
            raise error(f"fused decoding step: {decode_step.ERRORS[status]}")
        self._last = (weakref.ref(cache), pos, threads, _registrations[0])
        cache.advance(1)
        return logits

    def _ready(self, cache: KVCache, rows: int, pos: int) -> decode_step.Program | None:
        """The program for this cache and batch, rebuilt when anything it
        points at changed; None where the model does not qualify (yet)."""
        key = (
            cache.keys.data_ptr(),
            cache.values.data_ptr(),
            cache.keys.stride(),
            rows,
        )
        if self._program is not None and key == self._key:
            last, last_pos, threads, seen = self._last
            if (
                last is not None
                and last() is cache
                and last_pos == pos - 1
                and threads == torch.get_num_threads()
                and seen == _registrations[0]
            ):
                return self._program  # the next step of a checked generation
            if self._unchanged():
                return self._program
        if key == self._key and self._skip > 0:  # failed lately: not every step
            self._skip -= 1
            return None
        self._program, self._calls, self._buffers, self._parts = None, [], [], []
        program = self._build(cache, rows)
        failures = self._failures + 1 if key == self._key and program is None else 0
        self._program, self._key, self._failures = program, key, failures
        # after the n-th failure in a row skip 2^(n-1) - 1 steps (up to 255): the
        # first decoding step chooses the kernels, so the next one retries
        self._skip = min(2 ** max(failures - 1, 0) - 1, 255)
        return program

    def _unchanged(self) -> bool:
        """Every module the program reads still sits where it did, with its
        tensors where they were, and every layer still has the kernel plan
        the program calls (same threads, same weights)."""
        threads = torch.get_num_threads()
        return (
            all(p._modules.get(n) is c for p, n, c in self._parts)
            and all(t.data_ptr() == at for t, at in self._tensors)
            and all(
                m._call is c
                and c[0] == threads
                and m._buffers["weight"].data_ptr() == c[1]
                for m, c in self._calls
            )
        )

    def _build(self, cache: KVCache, rows: int) -> decode_step.Program | None:
        model = self.model
        keys, values = cache.keys, cache.values
        dtype = keys.dtype  # the activations', the parameters' and the cache's
        if (
            dtype not in _DTYPES
            or keys.device.type != "cpu"
            or values.stride() != keys.stride()
            or any(p.dtype != dtype or p.is_cuda for p in model.parameters())
            or any(_hooked(m) for m in model.modules())
        ):
            return None
        self._dtype = dtype
        if type(model) is GPTModel:
            return self._gpt2(_Builder(self, cache, rows))
        return self._llama(_Builder(self, cache, rows))

    def _gpt2(self, b: _Builder) -> decode_step.Program | None:
        model, cfg = self.model, self.model.cfg
        d, hd, heads = cfg.emb_dim, cfg.head_dim, cfg.n_heads
        if heads * hd != d or cfg.n_kv_heads != heads:
            return None  # GPT-2's projections: every head's keys and values
        # The layers, checked before anything is allocated.
        blocks = b.children(model.trf_blocks, cfg.n_layers, TransformerBlock)
        if blocks is None:
            return None
        layers = []
        for block in blocks:
            att, ff = b.part(block, "att"), b.part(block, "ff")
            mlp = b.part(ff, "layers")
            if type(att) is not MultiHeadAttention or type(mlp) is not nn.Sequential:
                return None
            if len(mlp) != 3 or type(b.part(mlp, "1")) is not GELU:
                return None
            names = ("W_query", "W_key", "W_value", "out_proj")
            linears = [b.part(att, n) for n in names]
            linears += [b.part(mlp, "0"), b.part(mlp, "2")]
            norms = [b.part(block, "norm1"), b.part(block, "norm2")]
            layers.append((linears, norms))
        final, head = b.part(model, "final_norm"), b.part(model, "out_head")
        tok, pos = b.part(model, "tok_emb"), b.part(model, "pos_emb")
        norms = [n for _, ns in layers for n in ns] + [final]
        if (
            type(tok) is not nn.Embedding
            or type(pos) is not nn.Embedding
            or any(type(n) is not LayerNorm for n in norms)
            or not b.kernels([*(m for ls, _ in layers for m in ls), head])
        ):
            return None
        b.keep(tok.weight, pos.weight, *(t for n in norms for t in (n.scale, n.shift)))

        x, h, q, k, v, a, o = (b.buffer(d) for _ in range(7))
        f = b.buffer(4 * d)
        p = b.program

        def norm(layer: LayerNorm, src: int, dst: int) -> None:
            p.norm(
                src, dst, layer.scale.data_ptr(), layer.shift.data_ptr(), d, layer.eps
            )

        p.embed(tok.weight.data_ptr(), pos.weight.data_ptr(), x, d, cfg.vocab_size,
                cfg.context_length)  # fmt: skip
        for i, ((wq, wk, wv, proj, fc, fc2), (norm1, norm2)) in enumerate(layers):
            norm(norm1, x, h)
            b.linear(wq, h, q), b.linear(wk, h, k), b.linear(wv, h, v)
            b.attention(i, q, k, v, a, heads, heads, hd)
            b.linear(proj, a, o)
            p.add(x, o, d)
            norm(norm2, x, h)
            b.linear(fc, h, f)
            p.gelu(f, 4 * d)
            b.linear(fc2, f, o)
            p.add(x, o, d)
        norm(final, x, h)
        b.linear(head, h, 0)  # 0: the step's output, the logits
        return p

    def _llama(self, b: _Builder) -> decode_step.Program | None:
        """Llama 3 and Qwen3 (gptkit.plugins.architectures.llama_model)."""
        from gptkit.plugins.architectures import llama_model as lm

        model, cfg = self.model, self.model.cfg
        d, hd, hidden = cfg.emb_dim, cfg.head_dim, cfg.hidden_dim
        heads, kv_heads = cfg.n_heads, cfg.n_kv_heads
        blocks = b.children(model.trf_blocks, cfg.n_layers, lm.LlamaBlock)
        if blocks is None:
            return None
        layers = []
        for block in blocks:
            att, ff = b.part(block, "att"), b.part(block, "ff")
            if type(att) is not lm.GroupedQueryAttention or type(ff) is not lm.SwiGLU:
                return None
            names = ("W_query", "W_key", "W_value", "out_proj")
            linears = [b.part(att, n) for n in names]
            linears += [b.part(ff, n) for n in ("fc1", "fc2", "fc3")]
            norms = [b.part(block, "norm1"), b.part(block, "norm2")]
            if cfg.qk_norm:
                norms += [b.part(att, "q_norm"), b.part(att, "k_norm")]
            layers.append((linears, norms))
        final, head = b.part(model, "final_norm"), b.part(model, "out_head")
        tok = b.part(model, "tok_emb")
        norms = [n for _, ns in layers for n in ns] + [final]
        if (
            type(tok) is not nn.Embedding
            or any(type(n) is not lm.RMSNorm for n in norms)
            or not b.kernels([*(m for ls, _ in layers for m in ls), head])
        ):
            return None
        b.keep(tok.weight, *(n.weight for n in norms))
        inv_freq = lm.inverse_frequencies(cfg, torch.device("cpu")).contiguous()
        b.hold(inv_freq)

        x, h, o = b.buffer(d), b.buffer(d), b.buffer(d)
        q, a = b.buffer(heads * hd), b.buffer(heads * hd)
        k, v = b.buffer(kv_heads * hd), b.buffer(kv_heads * hd)
        gate, up = b.buffer(hidden), b.buffer(hidden)
        p = b.program

        def norm(
            layer: Any, src: int, dst: int, dim: int = d, vectors: int = 1
        ) -> None:
            p.rms_norm(src, dst, layer.weight.data_ptr(), dim, layer.eps, vectors)

        p.embed(tok.weight.data_ptr(), 0, x, d, cfg.vocab_size, cfg.context_length)
        for i, ((wq, wk, wv, proj, fc1, fc2, fc3), ns) in enumerate(layers):
            norm(ns[0], x, h)
            b.linear(wq, h, q), b.linear(wk, h, k), b.linear(wv, h, v)
            if cfg.qk_norm:
                norm(ns[2], q, q, hd, heads)
                norm(ns[3], k, k, hd, kv_heads)
            p.rope(q, heads, hd, inv_freq.data_ptr())
            p.rope(k, kv_heads, hd, inv_freq.data_ptr())
            b.attention(i, q, k, v, a, heads, kv_heads, hd)
            b.linear(proj, a, o)
            p.add(x, o, d)
            norm(ns[1], x, h)
            b.linear(fc1, h, gate), b.linear(fc2, h, up)
            p.silu_mul(gate, up, hidden)
            b.linear(fc3, gate, o)
            p.add(x, o, d)
        norm(final, x, h)
        b.linear(head, h, 0)
        return p


class _Builder:
    """What building a program for one cache and batch needs: the modules it
    reads (kept by the step for :meth:`FusedStep._unchanged`), the layers'
    kernel calls, activation buffers, and the program."""

    def __init__(self, step: FusedStep, cache: KVCache, rows: int) -> None:
        self.step, self.cache, self.rows = step, cache, rows
        self.dtype = cache.keys.dtype
        self.program = decode_step.Program(_DTYPES[self.dtype])
        self._kernels: dict[int, tuple[Any, int, tuple[int, ...]]] = {}
        self._scratch: tuple[int, int] | None = None

    def part(self, parent: nn.Module, name: str) -> Any:
        """``parent``'s submodule ``name`` (or None), kept for the step's
        :meth:`FusedStep._unchanged`."""
        child = parent._modules.get(name)
        self.step._parts.append((parent, name, child))
        return child

    def children(self, parent: nn.Module, n: int, kind: type) -> list[Any] | None:
        """``parent``'s submodules "0" .. n-1, or None unless all are ``kind``."""
        blocks = [self.part(parent, str(i)) for i in range(n)]
        return blocks if all(type(m) is kind for m in blocks) else None

    def kernels(self, layers: list[Any]) -> bool:
        """Whether every layer has a kernel call on rows of this dtype (this
        package's int8/int4 layers: float32; its bf16 layer: bfloat16);
        their calls are kept for :meth:`linear` and the step's checks."""
        calls = []
        for m in layers:
            ok = getattr(m, "kernel_dtype", None) == self.dtype
            call = m.kernel_call() if ok else None
            if call is None:
                return False
            calls.append((m, call))
        self.step._calls = [(m, call[0]) for m, call in calls]
        self._kernels = {id(m): call for m, call in calls}
        return True

    def keep(self, *tensors: Tensor) -> None:
        """Tensors the program reads where they lie (checked before each step)."""
        self.step._tensors = [(t, t.data_ptr()) for t in tensors]

    def hold(self, tensor: Tensor) -> None:
        """A tensor the program reads that only it holds."""
        self.step._buffers.append(tensor)

    def buffer(self, width: int, dtype: torch.dtype | None = None) -> int:
        t = torch.empty((self.rows, width), dtype=dtype or self.dtype)
        self.hold(t)
        return t.data_ptr()

    def linear(self, layer: nn.Module, src: int, dst: int) -> None:
        _, address, extras = self._kernels[id(layer)]
        self.program.linear(src, dst, layer.in_features, layer.out_features,
                            address, extras)  # fmt: skip

    def attention(self, layer: int, q: int, k: int, v: int, dst: int, heads: int,
                  kv_heads: int, head_dim: int) -> None:  # fmt: skip
        """Store the step's keys and values in layer ``layer``'s cache, then
        attend; a bfloat16 program attends on float32 copies of its queries."""
        keys, values = self.cache.keys, self.cache.values
        size = keys.element_size()
        key_at = keys.data_ptr() + layer * keys.stride(0) * size
        value_at = values.data_ptr() + layer * values.stride(0) * size
        strides = (keys.stride(1), keys.stride(3), keys.stride(2))  # row, head, slot
        if self._scratch is None:
            self._scratch = (0, 0)
            if self.dtype != torch.float32:
                width = heads * head_dim
                self._scratch = (self.buffer(width, torch.float32),
                                 self.buffer(width, torch.float32))  # fmt: skip
        self.program.store(k, key_at, strides, kv_heads, head_dim)
        self.program.store(v, value_at, strides, kv_heads, head_dim)
        self.program.attend(q, key_at, value_at, strides, heads, heads // kv_heads,
                            head_dim, dst, self._scratch)  # fmt: skip
