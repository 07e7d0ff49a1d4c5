"""What a device has free for new allocations (torch-free unless asked about
a GPU): the CPU's from ``/proc/meminfo``'s ``MemAvailable``, a container's
cgroup limit (v2 or v1, reclaimable page cache counted as free) and the
address-space limit (``ulimit -v``), whichever is smallest, else psutil or
``sysconf``; CUDA's from ``torch.cuda.mem_get_info`` (plus what PyTorch's
caching allocator holds unused); Apple MPS's from Metal's recommended maximum.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _meminfo() -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        lines = Path("/proc/meminfo").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        key, _, rest = line.partition(":")
        fields = rest.split()
        if fields and fields[0].isdigit():
            out[key] = int(fields[0]) * (1024 if fields[1:] == ["kB"] else 1)
    return out


def _cgroup_free() -> int | None:
    """Free memory under this process's cgroup limits (v2, else v1), counting
    reclaimable page cache as free; None without a limit."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    best: int | None = None
    for line in lines:
        _, controllers, rel = line.split(":", 2)
        if controllers == "":  # v2: check every level up to the root
            path = Path("/sys/fs/cgroup") / rel.lstrip("/")
            while True:
                limit = _read_int(path / "memory.max")
                used = _read_int(path / "memory.current")
                if limit is not None and used is not None:
                    stat = _memory_stat(path / "memory.stat")
                    free = limit - used + stat.get("inactive_file", 0)
                    best = free if best is None else min(best, free)
                if path == Path("/sys/fs/cgroup") or path.parent == path:
                    break
                path = path.parent
        elif "memory" in controllers.split(","):
            base = Path("/sys/fs/cgroup/memory") / rel.lstrip("/")
            limit = _read_int(base / "memory.limit_in_bytes")
            used = _read_int(base / "memory.usage_in_bytes")
            if limit is not None and used is not None and limit < 1 << 60:
                stat = _memory_stat(base / "memory.stat")
                free = limit - used + stat.get("total_inactive_file", 0)
                best = free if best is None else min(best, free)
    return best


def _memory_stat(path: Path) -> dict[str, int]:
    try:
        pairs = (line.split() for line in path.read_text().splitlines())
        return {k: int(v) for k, v in pairs if v.isdigit()}
    except (OSError, ValueError):
        return {}


def _address_space_free() -> int | None:
    """Room left under ``ulimit -v`` (RLIMIT_AS), if one is set."""
    try:
        import resource
    except ImportError:
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    size = 0
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmSize:"):
                size = int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return soft - size


def cpu_free_memory() -> tuple[int | None, str]:
    """Bytes this process can still allocate on the CPU, and where the figure
    comes from; (None, reason) when the platform does not say."""
    candidates: list[tuple[int, str]] = []
    info = _meminfo()
    if "MemAvailable" in info:
        candidates.append((info["MemAvailable"], "available"))
    cgroup = _cgroup_free()
    if cgroup is not None:
        candidates.append((cgroup, "free under this container's memory limit"))
    address = _address_space_free()
    if address is not None:
        candidates.append((address, "left under the address-space limit (ulimit -v)"))
    if not candidates:
        try:
            import psutil  # type: ignore[import-not-found]

            candidates.append((psutil.virtual_memory().available, "available"))
        except ImportError:
            pass
    if not candidates and hasattr(os, "sysconf"):
        try:
            pages = os.sysconf("SC_AVPHYS_PAGES")
            candidates.append((pages * os.sysconf("SC_PAGE_SIZE"), "free"))
        except (ValueError, OSError):
            pass
    if not candidates:
        return None, f"{sys.platform} does not report its free memory"
    return min(candidates)


def device_free_memory(device: object) -> tuple[int | None, str]:
    """Free bytes on ``device`` (a torch.device or a name) and their source."""
    kind = getattr(device, "type", str(device).split(":")[0])
    if kind == "cuda":
        import torch

        index = getattr(device, "index", None)
        index = torch.cuda.current_device() if index is None else index
        free, _ = torch.cuda.mem_get_info(index)
        # Blocks PyTorch's caching allocator holds but does not use are free too.
        cached = torch.cuda.memory_reserved(index) - torch.cuda.memory_allocated(index)
        return free + cached, f"free on cuda:{index}"
    if kind == "mps":
        import torch

        try:
            limit = torch.mps.recommended_max_memory()
            used = torch.mps.driver_allocated_memory()
        except (AttributeError, RuntimeError):
            return cpu_free_memory()
        return limit - used, "free for Metal (recommended maximum)"
    return cpu_free_memory()
