"""A quantized GPT-2 model's decoding step as one C call
(:mod:`gptkit.system.decode_step`): what the built-in int8/int4 quantizers
return from :meth:`Quantizer.fused_step`.

The step applies when a :class:`~gptkit.core.model.GPTModel` of float32
parameters on the CPU decodes one token per row (up to 16 rows, every row of
the KV cache at the same length — greedy, sampling, beam search), with
gradients off, in eval mode, no hooks, every linear layer one of this
package's quantized layers, and each of them has already run a decoding step
(so its kernel is chosen: the first step takes the Python path). Anything else
returns None and the model's own forward runs. The program is built on the
first step of each cache and rebuilt when a kernel choice, the thread count or
any weight changes.

The arithmetic is the Python path's: the same matrix-product kernels; layer
norm, GELU (tanh) and the residual adds in float32 in C, which round like
PyTorch's to within a few units in the last place.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn

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
    """The fused step of ``model`` where its architecture is GPT-2's, else None."""
    if type(model) is not GPTModel or not decode_step.available():
        return None
    return FusedStep(model)


def _hooked(module: nn.Module) -> bool:
    return bool(module._forward_hooks or module._forward_pre_hooks)


def _global_hooks() -> bool:
    from torch.nn.modules import module as m

    return bool(m._global_forward_hooks or m._global_forward_pre_hooks)


class FusedStep:
    """Callable with :meth:`GPTModel.forward`'s arguments: the logits of a
    decoding step, or None where the step does not apply (module docs)."""

    def __init__(self, model: GPTModel) -> None:
        self.model = model
        self._program: decode_step.Program | None = None
        self._key: tuple[Any, ...] = ()
        self._calls: list[tuple[Any, Any]] = []  # (layer, its kernel plan)
        self._parts: list[tuple[nn.Module, str, Any]] = []  # (parent, name, child)
        self._tensors: list[tuple[Tensor, int]] = []  # (tensor, its address)
        self._buffers: list[Tensor] = []  # the activations
        self._failures, self._skip = 0, 0  # builds failed in a row; steps to skip
        self._dtype = torch.float32  # the program's activations and logits

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
        program = self._ready(cache, rows)
        if program is None:
            return None
        tokens = in_idx if in_idx.is_contiguous() else in_idx.contiguous()
        logits = torch.empty((rows, 1, model.cfg.vocab_size), dtype=self._dtype)
        threads = torch.get_num_threads()
        status = program.run(tokens.data_ptr(), rows, pos, logits.data_ptr(), threads)
        if status == -2:
            return None  # a bad token id or position: the forward raises
        if status:
            error = MemoryError if status == -1 else RuntimeError
            raise error(f"fused decoding step: {decode_step.ERRORS[status]}")
        cache.advance(1)
        return logits

    def _ready(self, cache: KVCache, rows: int) -> decode_step.Program | None:
        """The program for this cache and batch, rebuilt when anything it
        points at changed; None where the model does not qualify (yet)."""
        key = (
            cache.keys.data_ptr(),
            cache.values.data_ptr(),
            cache.keys.stride(),
            rows,
        )
        if self._program is not None and key == self._key and self._unchanged():
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
        model, cfg = self.model, self.model.cfg
        d, hd = cfg.emb_dim, cfg.head_dim
        heads, kv_heads = cfg.n_heads, cfg.n_kv_heads
        keys, values = cache.keys, cache.values
        dtype = keys.dtype  # the activations', the parameters' and the cache's
        if (
            dtype not in _DTYPES
            or keys.device.type != "cpu"
            or values.stride() != keys.stride()
            or heads * hd != d
            or kv_heads * hd != d  # GPT-2's projections: every head's keys
            or any(p.dtype != dtype or p.is_cuda for p in model.parameters())
            or any(_hooked(m) for m in model.modules())
        ):
            return None
        # The layers, checked before anything is allocated.
        blocks = [self._part(model.trf_blocks, str(i)) for i in range(cfg.n_layers)]
        if any(type(b) is not TransformerBlock for b in blocks):
            return None
        layers = []
        for block in blocks:
            att, ff = self._part(block, "att"), self._part(block, "ff")
            mlp = self._part(ff, "layers")
            if type(att) is not MultiHeadAttention or type(mlp) is not nn.Sequential:
                return None
            if len(mlp) != 3:
                return None
            names = ("W_query", "W_key", "W_value", "out_proj")
            parts = [self._part(att, n) for n in names]
            parts += [self._part(mlp, n) for n in ("0", "1", "2")]
            parts += [self._part(block, n) for n in ("norm1", "norm2")]
            layers.append(parts)
        head, final = self._part(model, "out_head"), self._part(model, "final_norm")
        tok, pos = self._part(model, "tok_emb"), self._part(model, "pos_emb")
        if type(tok) is not nn.Embedding or type(pos) is not nn.Embedding:
            return None
        linears = [m for parts in layers for m in (*parts[:4], parts[4], parts[6])]
        norms = [m for parts in layers for m in parts[7:]] + [final]
        # layers whose kernel reads and writes rows of this dtype (this
        # package's int8/int4 layers: float32, its bf16 layer: bfloat16)
        calls = [m.kernel_call() if getattr(m, "kernel_dtype", None) == dtype else None
                 for m in (*linears, head)]  # fmt: skip
        if (
            any(c is None for c in calls)
            or any(type(m) is not LayerNorm for m in norms)
            or any(type(parts[5]) is not GELU for parts in layers)
        ):
            return None
        self._calls = [(m, c[0]) for m, c in zip((*linears, head), calls, strict=True)]
        kernels = iter(calls)
        tensors = [
            tok.weight,
            pos.weight,
            *(t for n in norms for t in (n.scale, n.shift)),
        ]
        self._tensors = [(t, t.data_ptr()) for t in tensors]

        def buffer(width: int, of: torch.dtype = dtype) -> int:
            t = torch.empty((rows, width), dtype=of)
            self._buffers.append(t)
            return t.data_ptr()

        x, h, q, k, v, a, o, f = (buffer(w) for w in (d, d, d, d, d, d, d, 4 * d))
        program = decode_step.Program(_DTYPES[dtype])
        scratch = (0, 0)  # a bfloat16 program attends on float32 copies
        if dtype != torch.float32:
            scratch = (buffer(d, torch.float32), buffer(d, torch.float32))
        self._dtype = dtype

        def linear(layer: nn.Module, src: int, dst: int) -> None:
            _, address, extras = next(kernels)
            program.linear(src, dst, layer.in_features, layer.out_features,
                           address, extras)  # fmt: skip

        def norm(layer: LayerNorm, src: int, dst: int) -> None:
            program.norm(src, dst, layer.scale.data_ptr(), layer.shift.data_ptr(),
                         d, layer.eps)  # fmt: skip

        program.embed(tok.weight.data_ptr(), pos.weight.data_ptr(), x, d,
                      cfg.vocab_size, cfg.context_length)  # fmt: skip
        strides = (keys.stride(1), keys.stride(2), keys.stride(3))
        for i, (wq, wk, wv, proj, fc, _, fc2, norm1, norm2) in enumerate(layers):
            key_at = keys.data_ptr() + i * keys.stride(0) * keys.element_size()
            value_at = values.data_ptr() + i * values.stride(0) * values.element_size()
            norm(norm1, x, h)
            linear(wq, h, q), linear(wk, h, k), linear(wv, h, v)
            program.store(k, key_at, strides, kv_heads, hd)
            program.store(v, value_at, strides, kv_heads, hd)
            group = heads // kv_heads
            program.attend(q, key_at, value_at, strides, heads, group, hd, a, scratch)
            linear(proj, a, o)
            program.add(x, o, d)
            norm(norm2, x, h)
            linear(fc, h, f)
            program.gelu(f, 4 * d)
            linear(fc2, f, o)
            program.add(x, o, d)
        norm(final, x, h)
        linear(head, h, 0)  # 0: the step's output, the logits
        return program

    def _part(self, parent: nn.Module, name: str) -> Any:
        """``parent``'s submodule ``name`` (or None), kept for :meth:`_unchanged`."""
        child = parent._modules.get(name)
        self._parts.append((parent, name, child))
        return child
