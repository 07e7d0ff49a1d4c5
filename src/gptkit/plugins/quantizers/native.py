"""The AVX2 kernels of ``kernels/wq_avx2.c``: built once per machine with the
system's C compiler, loaded with ctypes.

The shared library is cached under ``$GPTKIT_CACHE_DIR/kernels`` (else the
platform's user cache directory), named by a hash of the source, the compiler
flags and the machine, so a changed source or another CPU builds anew. When
the CPU lacks AVX2/FMA, no compiler is found or the build fails, :func:`library`
returns None and the quantized layers fall back to PyTorch's own operators
(``GPTKIT_NO_NATIVE_KERNELS=1`` forces that, for tests and comparisons).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SOURCE = Path(__file__).with_name("kernels") / "wq_avx2.c"
FLAGS = ("-O3", "-mavx2", "-mfma", "-fopenmp", "-shared", "-fPIC", "-std=c99")
ABI_VERSION = 1


def cpu_has_avx2() -> bool:
    """Whether this x86-64 CPU has AVX2 and FMA (what the kernels use)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    words = set(flags.split())
    return {"avx2", "fma"} <= words


def _cache_root() -> Path:
    env = os.environ.get("GPTKIT_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("gptkit"))


def _compiler() -> str | None:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return name
    return None


def _build(compiler: str, target: Path) -> None:
    """Compile into a temporary file, then rename: concurrent builders and a
    killed build never leave a half-written library under the final name."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        subprocess.run(
            [compiler, *FLAGS, str(SOURCE), "-o", tmp],
            check=True,
            capture_output=True,
            timeout=120,
        )
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _bind(lib: ctypes.CDLL) -> ctypes.CDLL:
    p, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    lib.gk_int8_linear.argtypes = [p, i64, i64, p, p, p, p, i64, i32]
    lib.gk_int8_linear.restype = None
    lib.gk_int4_linear.argtypes = [p, i64, i64, p, p, p, i64, p, p, i64, i32]
    lib.gk_int4_linear.restype = ctypes.c_int
    return lib


_LOADED: ctypes.CDLL | None = None


def loaded() -> ctypes.CDLL | None:
    """The kernels if :func:`library` has loaded them (never builds: cheap
    enough for every forward pass, and traceable by ``torch.compile``)."""
    return _LOADED


@functools.cache
def library() -> ctypes.CDLL | None:
    """The loaded kernels, or None where they cannot run here (see the module);
    builds them on first use."""
    global _LOADED
    _LOADED = _load()
    return _LOADED


def _load() -> ctypes.CDLL | None:
    if os.environ.get("GPTKIT_NO_NATIVE_KERNELS", "") not in ("", "0"):
        return None
    if not cpu_has_avx2():
        return None
    compiler = _compiler()
    if compiler is None:
        return None
    source = SOURCE.read_bytes()
    key = hashlib.sha256(
        source + " ".join((compiler, *FLAGS, platform.machine())).encode()
    ).hexdigest()[:16]
    target = _cache_root() / "kernels" / f"wq_avx2-{key}.so"
    try:
        if not target.is_file():
            _build(compiler, target)
        lib = ctypes.CDLL(str(target))
        if lib.gk_abi_version() != ABI_VERSION:
            return None
    except (OSError, subprocess.SubprocessError) as exc:
        sys.stderr.write(
            f"gptkit: the AVX2 quantized kernels could not be built ({exc});"
            " using PyTorch's operators\n"
        )
        return None
    return _bind(lib)
