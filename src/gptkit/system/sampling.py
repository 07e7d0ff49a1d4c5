"""Drawing a token on the CPU in C (``kernels/sampling.c``), with PyTorch's
results bit for bit: :func:`multinomial` for ``torch.multinomial(probs, 1)``,
:func:`nucleus_threshold` for the top-p warper's sort and :func:`beam_top`
for beam search's choice of candidates.

Why: on a 50,257-token vocabulary, ``torch.multinomial`` draws an
exponential variate per token — a Mersenne Twister double and a ``log1p``,
serially, ~1 ms — and the nucleus needs the probabilities sorted (numpy's
sort ~1 ms, torch's ~3.5 ms); a quantized 124M model's whole decoding step
takes 4-7 ms. A trained model's distribution is usually peaked, but a
random-weight or high-temperature one is flat and its nucleus holds most of
the vocabulary.

- :func:`multinomial` advances the generator exactly as PyTorch does (the
  generator's state is read, the twister runs in C, the state is written
  back) but takes the logarithm only for the few tokens that can win the
  draw (``argmax(p / q)`` with ``q = -log1p(-u) >= u``). It checks itself
  against ``torch.multinomial`` once per process (a few seeds, shapes and
  zero rows) and defers to it where the check fails — another PyTorch whose
  sampling differs — or where it does not apply (a GPU, not float32, more
  than 2**24 categories). Invalid probabilities go to ``torch.multinomial``
  too, for its error.
- :func:`nucleus_threshold` sums the probabilities by buckets of values,
  exactly (in units of 2**-52: PyTorch's ``cumsum`` runs in float64, and
  partial sums below 2 of float32 values >= 2**-29 are multiples of 2**-52,
  so each running sum depends only on which values are larger, not on their
  order), and sorts only the bucket where the running sum crosses ``p``. It
  returns None where that proof does not hold (the nucleus reaches smaller
  values): the caller sorts.

- :func:`beam_top` is ``torch.topk((logprobs + running[:, None]).view(-1),
  k)`` in one pass (the same float32 sums, never stored): beam search's
  candidates among ``beams x V`` scores, ~0.4 ms of PyTorch per step at
  4 x 50,257.

Torch is imported by the functions only (this layer is torch-free at import).
"""

from __future__ import annotations

import ctypes
import functools
from pathlib import Path
from typing import Any

from gptkit.system import ckernels, cpu

_SOURCE = Path(__file__).with_name("kernels") / "sampling.c"
_MAX_CATEGORIES = 2**24  # torch.multinomial's limit
# torch.Generator.get_state() of a CPU generator (CPUGeneratorImplState): the
# legacy header, then the twister's 624 words as uint64.
_STATE_BYTES, _LEFT, _NEXT, _KEY = 5056, 8, 16, 24


@functools.cache
def library() -> ctypes.CDLL | None:
    """The sampling kernels, or None where they cannot be built."""
    fast = cpu.has("avx2", "fma", "f16c")
    flags = ckernels.AVX2_FLAGS if fast else ()
    lib = ckernels.load("sampling", _SOURCE, flags, (), 2)
    if lib is not None:
        p, i64 = ctypes.c_void_p, ctypes.c_int64
        lib.gk_nucleus.argtypes = [p, i64, ctypes.c_float, p, p, p]
        lib.gk_nucleus.restype = ctypes.c_int
        lib.gk_multinomial.argtypes = [p, i64, i64, p, p, p, p]
        lib.gk_multinomial.restype = ctypes.c_int
        lib.gk_beam_top.argtypes = [p, i64, i64, p, i64, p, p]
        lib.gk_beam_top.restype = ctypes.c_int
    return lib


def nucleus_threshold(
    probs: Any, p: float, logits: Any = None, out: Any = None
) -> float | None:
    """The smallest probability the top-p warper keeps in row ``probs`` (V,)
    (float32, CPU, contiguous) — the value at position ``kept - 1`` of the
    descending sort, ``kept`` counting positions whose float32
    ``cumsum - value`` is below ``p`` (at least 1) — or None (sort instead).
    With ``logits`` and ``out`` (V,) float32 contiguous rows, ``out`` becomes
    ``logits`` with ``-inf`` where ``probs`` is below the threshold."""
    if (logits is None) != (out is None):
        raise ValueError("logits and out go together")
    lib = library()
    rows = [probs] if logits is None else [probs, logits, out]
    if lib is None or any(
        str(t.dtype) != "torch.float32"
        or t.device.type != "cpu"
        or t.dim() != 1
        or not t.is_contiguous()
        or t.numel() != probs.numel()
        for t in rows
    ):
        return None
    value = ctypes.c_float()
    status = lib.gk_nucleus(
        probs.data_ptr(),
        probs.numel(),
        p,
        ctypes.byref(value),
        None if logits is None else logits.data_ptr(),
        None if out is None else out.data_ptr(),
    )
    return value.value if status == 0 else None


def beam_top(logprobs: Any, add: Any, k: int) -> tuple[Any, Any] | None:
    """``torch.topk((logprobs + add[:, None]).view(-1), k)`` for ``logprobs``
    (B, V) and ``add`` (B,), float32 CPU tensors: the values (descending; of
    equal values the lower index first) and flat indices — or None where the
    kernel does not apply (no kernel, another dtype or device, a NaN, k
    above 256): the caller asks torch."""
    import torch

    lib = library()
    if (
        lib is None
        or logprobs.dim() != 2
        or add.shape != logprobs.shape[:1]
        or not 1 <= k <= min(256, logprobs.numel())
        or any(
            t.dtype != torch.float32 or t.device.type != "cpu" for t in (logprobs, add)
        )
    ):
        return None
    rows, add = logprobs.contiguous(), add.contiguous()
    values = torch.empty(k)
    index = torch.empty(k, dtype=torch.int64)
    status = lib.gk_beam_top(
        rows.data_ptr(), rows.shape[0], rows.shape[1], add.data_ptr(), k,
        values.data_ptr(), index.data_ptr(),
    )  # fmt: skip
    return (values, index) if status == 0 else None


def multinomial(probs: Any, generator: Any = None) -> Any:
    """``torch.multinomial(probs, 1, generator=generator)`` for probabilities
    (B, V) or (V,): the same indices, the generator left in the same state."""
    import torch

    if not _applies(probs, generator) or not _agrees_with_torch():
        return torch.multinomial(probs, 1, generator=generator)
    drawn = _draw(probs, generator)
    if drawn is None:  # invalid probabilities: torch's own error
        return torch.multinomial(probs, 1, generator=generator)
    return drawn


def _applies(probs: Any, generator: Any) -> bool:
    import torch

    return (
        library() is not None
        and probs.device.type == "cpu"
        and probs.dtype == torch.float32
        and probs.dim() in (1, 2)
        and 0 < probs.shape[-1] <= _MAX_CATEGORIES
        and probs.numel() > 0
        and (generator is None or generator.device.type == "cpu")
        and not (torch.is_grad_enabled() and probs.requires_grad)
    )


def _draw(probs: Any, generator: Any) -> Any:
    """The draw in C, or None where the kernel refused the probabilities."""
    import numpy as np
    import torch

    gen = torch.default_generator if generator is None else generator
    state = gen.get_state()
    raw = state.numpy()
    if raw.nbytes != _STATE_BYTES:
        return None
    key = raw[_KEY : _KEY + 624 * 8].view(np.uint64).astype(np.uint32)
    left = ctypes.c_int32(int(raw[_LEFT : _LEFT + 4].view(np.int32)[0]))
    nxt = ctypes.c_int64(int(raw[_NEXT : _NEXT + 8].view(np.uint64)[0]))
    rows = probs.reshape(-1, probs.shape[-1]).contiguous()
    out = torch.empty(rows.shape[0], dtype=torch.int64)
    status = library().gk_multinomial(  # type: ignore[union-attr]
        rows.data_ptr(),
        rows.shape[0],
        rows.shape[1],
        key.ctypes.data,
        ctypes.byref(left),
        ctypes.byref(nxt),
        out.data_ptr(),
    )
    if status != 0:
        return None
    raw[_KEY : _KEY + 624 * 8].view(np.uint64)[:] = key
    raw[_LEFT : _LEFT + 4].view(np.int32)[0] = left.value
    raw[_NEXT : _NEXT + 8].view(np.uint64)[0] = nxt.value
    gen.set_state(state)
    return out.reshape(*probs.shape[:-1], 1)


@functools.cache
def _agrees_with_torch() -> bool:
    """Whether :func:`_draw` gives ``torch.multinomial``'s indices and leaves
    the generator as it does, on a few seeds and shapes (once per process)."""
    import torch

    gen = torch.Generator().manual_seed(0)
    for seed, shape in enumerate(((1, 50), (3, 1000), (50,), (2, 7))):
        probs = torch.rand(shape, generator=gen) ** 4
        probs[..., : shape[-1] // 3] = 0.0  # zero entries do not end the draw
        mine, theirs = torch.Generator(), torch.Generator()
        for g in (mine, theirs):
            g.manual_seed(seed)
            torch.rand(seed * 311, generator=g)  # start mid-way through a twist
        for _ in range(3):
            got = _draw(probs, mine)
            want = torch.multinomial(probs, 1, generator=theirs)
            if got is None or not torch.equal(got, want):
                return False
        if not torch.equal(mine.get_state(), theirs.get_state()):
            return False
    return True
