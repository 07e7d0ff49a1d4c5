"""Attention of one query per row over a KV cache, on the CPU, in C
(``kernels/decode.c``, built by :mod:`gptkit.system.ckernels`): a decoding
step's attention for every architecture (:func:`gptkit.core.model.attention`).

PyTorch's CPU ``scaled_dot_product_attention`` is built for blocks of queries;
for a 124M model's decoding step (12 heads, one query, ~100 cached keys) it
took ~100 us per layer, several times what reading the keys and values takes.
The kernel reads the cache where it lies, in its dtype (float32, bfloat16 or
float16), grouped-query heads from their shared key/value head (no copy per
query head), and computes in float32. Where it does not apply (a GPU, more
than one query, gradients, a CPU without AVX2, no C compiler) :func:`attend`
returns None and the caller uses PyTorch's kernel. Torch is imported by
:func:`attend` only (this layer is torch-free at import).
"""

from __future__ import annotations

import ctypes
import functools
from pathlib import Path
from typing import Any

from gptkit.system import ckernels

_SOURCE = Path(__file__).with_name("kernels") / "decode.c"
_DTYPES = {"torch.float32": 0, "torch.bfloat16": 1, "torch.float16": 2}
_F32 = "torch.float32"


@functools.cache
def library() -> ctypes.CDLL | None:
    """The decoding kernels (attention, :mod:`gptkit.system.decode_step`'s
    step), or None where they cannot be built or run."""
    lib = ckernels.load(
        "decode", _SOURCE, ckernels.AVX2_FLAGS, ("avx2", "fma", "f16c"), 3
    )
    if lib is not None:
        p, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
        lib.gk_attend.argtypes = [p, i64, i64, i64, i64, i64, i64, p, p, i32, i64, i64,
                                  i64, i64, p, i64, ctypes.c_float, p, i32]  # fmt: skip
        lib.gk_attend.restype = i32
        lib.gk_step.argtypes = [p, i64, p, i64, i64, i64, p, i32]
        lib.gk_step.restype = i32
    return lib


def attend(q: Any, k: Any, v: Any, mask: Any, shared: int = 0) -> Any:
    """``softmax(q k^T / sqrt(D)) v`` for queries (B, H, 1, D) over keys and
    values (B, H / group, S, D), ``mask`` None or boolean, broadcastable to
    (B, 1, 1, S); the output (B, H, 1, D) in q's dtype — or None where the
    kernel does not apply (see the module). ``shared``: the leading positions
    whose keys and values are the same bits in every row (read once for all
    rows; a wrong value gives wrong results)."""
    import torch

    b, h, t, d = q.shape
    if (
        t != 1
        or q.device.type != "cpu"
        or d % 8
        or k.shape[1] == 0
        or h % k.shape[1]
        or k.dtype != v.dtype
        or str(k.dtype) not in _DTYPES
        or k.stride() != v.stride()
        or k.stride(-1) != 1
        or q.stride(-1) != 1
        or (
            torch.is_grad_enabled()
            and (q.requires_grad or k.requires_grad or v.requires_grad)
        )
    ):
        return None
    lib = library()
    if lib is None:
        return None
    s = k.shape[2]
    keep = None
    if mask is not None:
        if mask.dtype != torch.bool or mask.dim() != 4 or mask.shape[1] != 1:
            return None
        keep = mask.expand(b, 1, 1, s).reshape(b, s).contiguous()
    qf = q if str(q.dtype) == _F32 else q.float()
    out = torch.empty((b, h, 1, d))
    status = lib.gk_attend(
        qf.data_ptr(), qf.stride(0), qf.stride(1), b, h, h // k.shape[1], d,
        k.data_ptr(), v.data_ptr(), _DTYPES[str(k.dtype)], k.stride(0),
        k.stride(1), k.stride(2), s, None if keep is None else keep.data_ptr(),
        shared, d**-0.5, out.data_ptr(), torch.get_num_threads(),
    )  # fmt: skip
    if status != 0:
        raise MemoryError("attention kernel: out of memory")
    return out if str(q.dtype) == _F32 else out.to(q.dtype)
