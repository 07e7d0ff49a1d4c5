"""gptkit's C kernels for the linear layers, one shared library per
instruction set (built and cached by :mod:`gptkit.system.ckernels`):

- ``avx512vnni`` and ``avx2``: ``kernels/qdot.c``, integer dot products (int8 or
  int4 weights x activations quantized to int8 per call), compiled with and
  without the AVX-512 flags;
- ``fma-avx2``: ``kernels/wq_avx2.c``, weight-only (each weight widened to
  float32, float activations): exact activations, slower;
- ``avx512bf16``: ``kernels/bf16.c``, bf16 weights x bf16 activations with
  ``vdpbf16ps`` (float32 accumulation), for ``--dtype bf16``.

A kernel set is built only where the CPU has its flags. When the CPU lacks
them, no compiler is found or the build fails, :func:`library` returns None
and the layers use another backend (``GPTKIT_NO_NATIVE_KERNELS=1`` forces
that, for tests and comparisons).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

from gptkit.system import ckernels, cpu

_DIR = Path(__file__).with_name("kernels")
_AVX2 = ckernels.AVX2_FLAGS
_AVX512 = (*_AVX2, "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq")


@dataclass(frozen=True)
class KernelSet:
    name: str
    source: str
    flags: tuple[str, ...]  # compiler flags beyond ckernels.COMMON_FLAGS
    needs: tuple[str, ...]  # /proc/cpuinfo flags
    abi: int
    ops: tuple[str, ...]  # what it computes: int8, int4, bf16


KERNEL_SETS = {
    k.name: k
    for k in (
        KernelSet(
            "avx512vnni",
            "qdot.c",
            (*_AVX512, "-mavx512vnni"),
            ("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni"),
            4,
            ("int8", "int4"),
        ),
        KernelSet(
            "avx2", "qdot.c", _AVX2, ("avx2", "fma", "f16c"), 4, ("int8", "int4")
        ),
        KernelSet("fma-avx2", "wq_avx2.c", _AVX2, ("avx2", "fma"), 2, ("int8", "int4")),
        KernelSet(
            "avx512bf16",
            "bf16.c",
            (*_AVX512, "-mavx512bf16"),
            ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_bf16"),
            2,
            ("bf16",),
        ),
    )
}
#: Preference when nothing was measured: integer dot products first.
PREFERENCE = ("avx512vnni", "avx2", "fma-avx2")


def cpu_has_avx2() -> bool:
    """Whether this x86-64 CPU has AVX2 and FMA (the least any kernel needs)."""
    return cpu.has("avx2", "fma")


cache_root = ckernels.cache_root


@functools.cache
def source_hash() -> str:
    """A short hash of the kernels' C sources (a changed kernel is timed anew)."""
    digest = hashlib.sha256()
    for name in sorted({k.source for k in KERNEL_SETS.values()}):
        digest.update((_DIR / name).read_bytes())
    return digest.hexdigest()[:16]


def _compiler() -> str | None:
    return ckernels.compiler()


def _bind(lib: ctypes.CDLL, kset: KernelSet) -> ctypes.CDLL:
    p, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    if kset.source == "wq_avx2.c":
        lib.gk_int8_linear.argtypes = [p, i64, i64, p, p, p, p, i64, i32]
        lib.gk_int8_linear.restype = ctypes.c_int
        lib.gk_int4_linear.argtypes = [p, i64, i64, p, p, p, i64, p, p, i64, i32]
        lib.gk_int4_linear.restype = ctypes.c_int
    elif kset.source == "qdot.c":
        lib.gk_q8_linear.argtypes = [p, i64, i64, p, p, p, p, i64, i32]
        lib.gk_q8_linear.restype = ctypes.c_int
        lib.gk_q4_linear.argtypes = [p, i64, i64, p, i64, p, p, i64, i32]
        lib.gk_q4_linear.restype = ctypes.c_int
        lib.gk_quantize_rows.argtypes = [p, i64, i64, p, p]
        lib.gk_quantize_rows.restype = ctypes.c_int
        lib.gk_lanes.argtypes = []
        lib.gk_lanes.restype = ctypes.c_int
    else:
        lib.gk_bf16_linear.argtypes = [p, i64, i64, p, p, p, i64, i32]
        lib.gk_bf16_linear.restype = ctypes.c_int
    return lib


_LOADED: dict[str, ctypes.CDLL | None] = {}


def loaded(name: str = "fma-avx2") -> ctypes.CDLL | None:
    """The kernel set if :func:`library` has loaded it (never builds: cheap
    enough for every forward pass, and traceable by ``torch.compile``)."""
    return _LOADED.get(name)


@functools.cache
def library(name: str = "fma-avx2") -> ctypes.CDLL | None:
    """The loaded kernel set ``name`` (see :data:`KERNEL_SETS`), or None where
    it cannot run here (see the module); builds it on first use."""
    _LOADED[name] = _load(KERNEL_SETS[name])
    return _LOADED[name]


def available(op: str | None = None) -> list[str]:
    """Names of the kernel sets that load here (building them if needed), in
    :data:`PREFERENCE` order; only those computing ``op`` when given."""
    names = [*PREFERENCE, "avx512bf16"]
    return [
        n
        for n in names
        if (op is None or op in KERNEL_SETS[n].ops) and library(n) is not None
    ]


def _load(kset: KernelSet) -> ctypes.CDLL | None:
    cc = _compiler()
    if cc is None:
        return None
    lib = ckernels.load(
        kset.name, _DIR / kset.source, kset.flags, kset.needs, kset.abi, cc
    )
    return None if lib is None else _bind(lib, kset)
