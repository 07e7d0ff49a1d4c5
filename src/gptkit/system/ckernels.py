"""Builds and loads gptkit's C kernels: compiled once per machine with the
system's C compiler (``$CC``, else cc, gcc or clang; OpenMP) and loaded with
ctypes. Used by the quantized and bf16 linear layers
(:mod:`gptkit.plugins.quantizers.native`) and the decoding attention
(:mod:`gptkit.system.decode_attention`).

Libraries are cached under ``$GPTKIT_CACHE_DIR/kernels`` (else the platform's
user cache directory), named by a hash of the source, the compiler, its flags
and the machine, so a changed source or another CPU builds anew; each is
written to a temporary name and renamed, so concurrent builders and a killed
build never leave half a library. :func:`load` returns None where the CPU
lacks the flags, no compiler is found, the build fails or
``GPTKIT_NO_NATIVE_KERNELS=1`` is set: callers then use PyTorch.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from gptkit.system import cpu

COMMON_FLAGS = ("-O3", "-fopenmp", "-shared", "-fPIC", "-std=c99")
AVX2_FLAGS = ("-mavx2", "-mfma", "-mf16c")


def cache_root() -> Path:
    env = os.environ.get("GPTKIT_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("gptkit"))


def disabled() -> bool:
    return os.environ.get("GPTKIT_NO_NATIVE_KERNELS", "") not in ("", "0")


def compiler() -> str | None:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return name
    return None


def _build(cc: str, source: Path, flags: tuple[str, ...], target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        subprocess.run(
            [cc, *COMMON_FLAGS, *flags, str(source), "-o", tmp],
            check=True,
            capture_output=True,
            timeout=120,
        )
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load(
    name: str,
    source: Path,
    flags: tuple[str, ...],
    needs: tuple[str, ...],
    abi: int,
    cc: str | None = None,
) -> ctypes.CDLL | None:
    """The library built from ``source`` with ``flags`` (beyond
    :data:`COMMON_FLAGS`), or None (see the module). ``needs``: the
    /proc/cpuinfo flags it runs on; ``abi``: what its ``gk_abi_version()``
    must return (an older cached build is not used)."""
    if disabled() or not cpu.has(*needs):
        return None
    cc = cc or compiler()
    if cc is None:
        return None
    text = source.read_bytes()
    key = hashlib.sha256(
        text + " ".join((cc, *COMMON_FLAGS, *flags, platform.machine())).encode()
    ).hexdigest()[:16]
    target = cache_root() / "kernels" / f"{name}-{key}.so"
    try:
        if not target.is_file():
            _build(cc, source, flags, target)
        lib = ctypes.CDLL(str(target))
        if lib.gk_abi_version() != abi:
            return None
    except (OSError, subprocess.SubprocessError) as exc:
        sys.stderr.write(
            f"gptkit: the {name} kernels could not be built ({exc});"
            " using another backend\n"
        )
        return None
    return lib
