"""A whole decoding step in one C call: a :class:`Program` lists a model's
operations for one token per row (embedding, layer or RMS norms, linear
layers, rotary embeddings, KV-cache writes, attention, residual adds, GELU or
SwiGLU's gate) with the addresses of its weights and of preallocated
activation buffers; :meth:`Program.run` executes them (``gk_step`` in
``kernels/decode.c``).

Why: on the CPU a quantized 124M model's decoding step spends ~1.5 ms of its
6-9 ms in the interpreter and in PyTorch's per-operator dispatch (~160 module
calls and ~300 small operators per token) — time in which no weight is read.
A program built once per model and cache removes it; the matrix products are
the same kernels (called through their addresses), so the tokens are too.

Building a program is the architecture's business (it knows its layers; see
``gptkit.plugins.quantizers.fused`` for GPT-2, Llama 3 and Qwen3); this
module knows only the operations. Addresses are plain integers: the caller
keeps the tensors alive and rebuilds the program when any of them moves.
Torch-free.
"""

from __future__ import annotations

import ctypes
import struct

from gptkit.system import decode_attention

EMBED, NORM, LINEAR, STORE, ATTEND, ADD, GELU, RMS_NORM, ROPE, SILU_MUL = range(10)
_WORDS = 16  # int64 words per operation: its kind, 14 fields, the dtype
#: activation (and cache) dtypes, as the kernels number them
DTYPES = {"float32": 0, "bfloat16": 1, "float16": 2}

#: gk_step's status -> meaning (0: done)
ERRORS = {
    -1: "out of memory",
    -2: "a token or position outside the embeddings",
    -3: "a malformed operation",
}


def _bits(value: float) -> int:
    """A float as the int64 bits of a double (a field of an operation)."""
    return struct.unpack("<q", struct.pack("<d", value))[0]


def available() -> bool:
    return decode_attention.library() is not None


class Program:
    """Operations of one decoding step, in order. Pointers are addresses of
    buffers of ``dtype`` (``float32`` or ``bfloat16``: the activations, the
    embedding and layer-norm parameters; a bfloat16 program rounds each
    result to bfloat16 where PyTorch's bfloat16 forward does); a linear
    layer's output 0 is the step's output."""

    def __init__(self, dtype: str = "float32") -> None:
        if dtype not in ("float32", "bfloat16"):
            raise ValueError(f"activations in float32 or bfloat16, not {dtype}")
        self.dtype = DTYPES[dtype]
        self._ops: list[list[int]] = []
        self._array: ctypes.Array[ctypes.c_int64] | None = None

    def __len__(self) -> int:
        return len(self._ops)

    def _add(self, kind: int, *fields: int) -> None:
        if len(fields) > _WORDS - 2:
            raise ValueError("too many fields for one operation")
        padding = [0] * (_WORDS - 2 - len(fields))
        self._ops.append([kind, *fields, *padding, self.dtype])
        self._array = None

    def embed(self, tokens: int, positions: int, dst: int, dim: int,
              vocab: int, n_positions: int) -> None:  # fmt: skip
        """dst[r] = tokens[token r] + positions[pos] (tables of ``dim`` columns;
        ``positions`` 0: no position table, rotary models)."""
        self._add(EMBED, tokens, positions, dst, dim, vocab, n_positions)

    def norm(self, src: int, dst: int, weight: int, bias: int, dim: int,
             eps: float) -> None:  # fmt: skip
        """Layer normalisation of each row of ``dim`` values."""
        self._add(NORM, src, dst, weight, bias, dim, _bits(eps))

    def rms_norm(self, src: int, dst: int, weight: int, dim: int, eps: float,
                 vectors: int = 1) -> None:  # fmt: skip
        """RMSNorm of each row's ``vectors`` vectors of ``dim`` values (Llama's;
        ``vectors`` > 1: each head's queries or keys, Qwen3)."""
        self._add(RMS_NORM, src, dst, weight, dim, _bits(eps), vectors)

    def rope(self, buffer: int, heads: int, head_dim: int, inv_freq: int) -> None:
        """Rotate each row's ``heads`` vectors in place by position ``pos``
        (the halves convention; ``inv_freq``: head_dim / 2 float32 values)."""
        self._add(ROPE, buffer, heads, head_dim, inv_freq)

    def silu_mul(self, gate: int, up: int, dim: int) -> None:
        """gate = silu(gate) * up, ``dim`` values per row (SwiGLU)."""
        self._add(SILU_MUL, gate, up, dim)

    def linear(self, src: int, dst: int, in_features: int, out_features: int,
               function: int, extras: tuple[int, ...]) -> None:  # fmt: skip
        """``function(src, rows, in, *extras, dst, out, threads)`` (a gptkit
        kernel: 2, 3 or 5 integer/pointer extras; returns 0 or an error),
        reading and writing rows of the program's dtype."""
        if len(extras) not in (2, 3, 5):
            raise ValueError(
                f"a linear kernel takes 2, 3 or 5 extras, not {len(extras)}"
            )
        self._add(LINEAR, src, dst, in_features, out_features, function,
                  len(extras), *extras)  # fmt: skip

    def store(self, src: int, cache: int, strides: tuple[int, int, int],
              heads: int, head_dim: int) -> None:  # fmt: skip
        """Write each row's ``heads`` x ``head_dim`` values into slot ``pos``
        of a cache of the program's dtype (row, head and slot ``strides`` in
        elements)."""
        self._add(STORE, src, cache, *strides, heads, head_dim)

    def attend(self, q: int, keys: int, values: int, strides: tuple[int, int, int],
               heads: int, group: int, head_dim: int, dst: int,
               scratch: tuple[int, int] = (0, 0)) -> None:  # fmt: skip
        """Attention of each row's ``heads`` queries over slots 0..pos of the
        cache, which holds the program's dtype (``group`` query heads per
        key/value head). A bfloat16 program attends in float32: ``scratch``,
        two float32 buffers of a step's queries."""
        if self.dtype != DTYPES["float32"] and not all(scratch):
            raise ValueError("a bfloat16 program's attention needs float32 scratch")
        self._add(ATTEND, q, keys, values, *strides, heads, group, head_dim, dst,
                  _bits(head_dim**-0.5), *scratch, self.dtype)  # fmt: skip

    def add(self, dst: int, src: int, dim: int) -> None:
        """dst += src, ``dim`` values per row (a residual connection)."""
        self._add(ADD, dst, src, dim)

    def gelu(self, buffer: int, dim: int) -> None:
        """GELU (tanh approximation) in place, ``dim`` values per row."""
        self._add(GELU, buffer, dim)

    def run(
        self, tokens: int, rows: int, pos: int, out: int, threads: int, shared: int = 0
    ) -> int:
        """Run the step for ``rows`` int64 ``tokens`` at position ``pos``, the
        first ``shared`` positions of the cache the same bits in every row;
        returns gk_step's status (0, or a key of :data:`ERRORS`)."""
        lib = decode_attention.library()
        if lib is None:
            raise RuntimeError("the decoding kernels are not available")
        if self._array is None:
            flat = [0] * (_WORDS * len(self._ops))
            for i, op in enumerate(self._ops):
                flat[i * _WORDS : i * _WORDS + len(op)] = op
            self._array = (ctypes.c_int64 * len(flat))(*flat)
        return int(
            lib.gk_step(
                self._array, len(self._ops), tokens, rows, pos, shared, out, threads
            )
        )
