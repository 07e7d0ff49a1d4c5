"""glibc's allocator thresholds, tuned for training on the CPU (ctypes; a no-op
off glibc). Called explicitly by the trainer, never as a side effect."""

from __future__ import annotations

from typing import Any


def tune_cpu_allocator() -> bool:
    """Ask glibc to keep large freed blocks instead of returning them to the
    kernel. Training allocates logits of batch x context x 50257 floats (hundreds
    of MB) every step; by default glibc maps and unmaps them each time and the
    kernel zeroes fresh pages, which on a 2-core CPU costs about a third of the
    step time (see benchmarks/test_training.py). Returns whether it applied."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # musl or no glibc
        return False
    one_gib, two_gib = 1 << 30, (1 << 31) - 1
    return _mallopt(libc, mmap_threshold=one_gib, trim_threshold=two_gib)


def release_cpu_memory() -> bool:
    """Undo :func:`tune_cpu_allocator`: glibc maps large blocks again and
    returns freed memory to the kernel (its default thresholds, 128 KiB). FSDP
    frees and reallocates every block's gathered weights and gradients each
    step; kept in the heap, they raised a gpt2-355m process's peak resident
    memory from about 5,000 to 9,200-10,000 MiB (benchmarks/scripts/fsdp_memory.py),
    more than DDP's 8,400: it undid what sharding saves. Returns whether it
    applied."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    default = 128 * 1024
    return _mallopt(libc, mmap_threshold=default, trim_threshold=default)


def _mallopt(libc: Any, *, mmap_threshold: int, trim_threshold: int) -> bool:
    import ctypes

    m_trim_threshold, m_mmap_threshold = -1, -3
    ok = libc.mallopt(m_mmap_threshold, ctypes.c_int(mmap_threshold))
    ok &= libc.mallopt(m_trim_threshold, ctypes.c_int(trim_threshold))
    return bool(ok)
