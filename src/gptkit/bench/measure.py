"""Timing, statistics and memory: the measurement rules every benchmark shares.

- **Repeats.** ``measure`` runs a callable ``warmup`` times (discarded: lazy
  initialisation, allocator growth, kernel selection, ``torch.compile``) and then
  ``repeats`` times, timing each run with ``time.perf_counter``. The headline is
  the best (shortest) repeat, as ``timeit`` and pytest-benchmark's ``min`` report:
  on a shared machine noise only ever adds time. All repeats are kept, so the
  spread is known. ``measure_interleaved`` applies the same rules to several
  contenders in rounds (each timed once per round), so a slow drift of the
  machine does not favour whichever contender ran before it.
- **Synchronisation.** GPU work is asynchronous; every runner calls :func:`sync`
  before it returns, so a timer measures the work and not its launch.
- **Seeds.** Runners take explicit seeds; nothing depends on global state.
- **Threads.** On the CPU, benchmarks run with one torch thread unless asked
  otherwise (:func:`torch_threads`): a batch-1 decode step is a chain of small
  operations that gains little from intra-op threads, and on a machine shared
  with other processes a parallel region waits for its slowest thread, whose
  core may be busy: measured on a shared 2-core machine, a 124M-shaped model
  took 54 ms per token with one thread and 134 to 670 ms with two. One thread
  keeps repeats comparable; ``--threads 0`` restores torch's default.
- **Peak memory.** CUDA: ``torch.cuda.max_memory_allocated`` after
  ``reset_peak_memory_stats`` (tensors only, not the allocator's cache). CPU
  (Linux): the process's resident-set high-water mark ``VmHWM`` from
  ``/proc/self/status``, reset with ``echo 5 > /proc/self/clear_refs`` after
  ``malloc_trim(0)`` has returned freed heap memory to the kernel; the peak is
  ``VmHWM`` minus the resident size before the run (everything the run touched:
  tensors, the KV cache, allocator slack, Python objects). ``tracemalloc`` does
  not see torch's allocations, so it is not used.

Torch is imported when used.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from gptkit.system.cpu import FLAGS

_MIB = 1024 * 1024


def sync(device: Any) -> None:
    """Wait for queued GPU work, so a timer measures it (no-op on the CPU)."""
    kind = getattr(device, "type", str(device))
    if kind == "cuda":
        import torch

        torch.cuda.synchronize()
    elif kind == "mps":
        import torch

        torch.mps.synchronize()


@dataclass
class Measurement:
    """Seconds of each timed repeat and the tokens each repeat produced."""

    name: str
    seconds: list[float]
    tokens: int

    @property
    def best(self) -> float:
        """The shortest repeat (the headline; noise only adds time)."""
        return min(self.seconds)

    @property
    def tokens_per_s(self) -> float:
        """Tokens per second of the best repeat."""
        return self.tokens / self.best

    @property
    def spread(self) -> float | None:
        """How far the slowest repeat's speed fell below the best's (see
        :func:`speed_spread`)."""
        return speed_spread(self.seconds)


def measure(
    name: str, run: Callable[[], int], repeats: int = 3, warmup: int = 1
) -> Measurement:
    """Warm-up runs (discarded), then ``repeats`` timed runs of ``run``, which
    returns the number of tokens it produced."""
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    for _ in range(warmup):
        run()
    seconds, tokens = [], 0
    for _ in range(repeats):
        elapsed, tokens = time_once(run)
        seconds.append(elapsed)
    return Measurement(name, seconds, tokens)


def time_once(run: Callable[[], int]) -> tuple[float, int]:
    """(seconds, tokens) of one call of ``run`` (which synchronises the device
    before it returns)."""
    start = time.perf_counter()
    tokens = run()
    return time.perf_counter() - start, tokens


@dataclass
class Interleaved:
    """One contender's result from :func:`measure_interleaved`."""

    measurement: Measurement
    peak_bytes: int | None
    memory_source: str

    @property
    def peak_mib(self) -> float | None:
        return None if self.peak_bytes is None else self.peak_bytes / _MIB


def measure_interleaved(
    runs: Sequence[tuple[str, Callable[[], int]]],
    repeats: int = 3,
    warmup: int = 1,
    device: Any = "cpu",
    progress: Callable[[str], None] | None = None,
) -> list[Interleaved]:
    """:func:`measure` for several contenders in rounds: each is warmed up,
    then every round times each contender once, in order. Slow drift of a
    shared machine (another process starting, a thermal state) then touches
    every contender alike instead of whichever ran while it lasted. The rules
    are :func:`measure`'s (warm-up discarded, best repeat the headline).

    Each call runs inside :class:`PeakMemory` (outside the timer); a
    contender's peak is the largest over its calls, warm-up included.
    """
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    say = progress or (lambda _: None)
    peaks: list[int | None] = [None] * len(runs)
    sources = ["unavailable"] * len(runs)
    seconds: list[list[float]] = [[] for _ in runs]
    tokens = [0] * len(runs)

    def call(i: int, timed: bool) -> None:
        with PeakMemory(device) as memory:
            elapsed, made = time_once(runs[i][1])
        if timed:
            seconds[i].append(elapsed)
            tokens[i] = made
        sources[i] = memory.source
        if memory.peak_bytes is not None:
            peaks[i] = max(peaks[i] or 0, memory.peak_bytes)

    for i, (name, _) in enumerate(runs):
        if warmup:
            say(f"warm-up: {name}")
        for _ in range(warmup):
            call(i, timed=False)
    for r in range(repeats):
        say(f"round {r + 1}/{repeats}: " + ", ".join(name for name, _ in runs))
        for i in range(len(runs)):
            call(i, timed=True)
    return [
        Interleaved(Measurement(name, seconds[i], tokens[i]), peaks[i], sources[i])
        for i, (name, _) in enumerate(runs)
    ]


def speed_spread(seconds: Sequence[float]) -> float | None:
    """The spread of repeats, in speed: (best - worst) / best tokens/s, which
    is 1 - fastest / slowest time (0: identical repeats; 0.2: the slowest
    repeat ran 20% below the best speed). None for fewer than two repeats."""
    if len(seconds) < 2:
        return None
    return 1.0 - min(seconds) / max(seconds)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) with linear interpolation between order
    statistics (Hyndman & Fan, 1996, definition 7; numpy's default)."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError("q must be in [0, 100]")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def median(values: Sequence[float]) -> float:
    """The 50th percentile."""
    return percentile(values, 50)


# -- threads -------------------------------------------------------------------


def default_threads(device: str) -> int:
    """1 for a CPU run, 0 (torch's default) when ``device`` names or ``auto``
    finds a GPU. See the module docs."""
    import torch

    on_gpu = device in ("cuda", "mps") or (
        device == "auto"
        and (torch.cuda.is_available() or torch.backends.mps.is_available())
    )
    return 0 if on_gpu else 1


@contextlib.contextmanager
def torch_threads(count: int | None, device: str = "cpu") -> Iterator[int]:
    """Run the block with ``count`` torch threads (0: torch's default; None:
    :func:`default_threads`), restoring the previous count after. Yields the
    count in effect."""
    import torch

    if count is None:
        count = default_threads(device)
    before = torch.get_num_threads()
    if count == 0:
        yield before
        return
    torch.set_num_threads(count)
    try:
        yield count
    finally:
        torch.set_num_threads(before)


# -- peak memory ---------------------------------------------------------------


def _proc_status_kib(field: str) -> int | None:
    """A ``kB`` field of /proc/self/status (Linux), or None."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_rss_peak() -> bool:
    """Return freed heap memory to the kernel, then reset VmHWM to VmRSS."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # musl or no glibc: still try the reset
        pass
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
    except OSError:
        return False
    return True


class PeakMemory:
    """Context manager: the peak memory a block of work used above what was in
    use when it started (see the module docs for what is measured where).

    ``peak_bytes`` is None when the platform offers no way to measure it;
    ``source`` says what was measured, or why nothing was.
    """

    def __init__(self, device: Any) -> None:
        self.device = device
        self.kind = getattr(device, "type", str(device))
        self.peak_bytes: int | None = None
        self.source = "unavailable"
        self._base = 0
        self._ok = False

    def __enter__(self) -> PeakMemory:
        if self.kind == "cuda":
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            self._ok = True
            self.source = "torch.cuda.max_memory_allocated (tensors)"
        elif self.kind == "cpu":
            rss = _proc_status_kib("VmRSS")
            if rss is not None and _reset_rss_peak():
                self._base = (_proc_status_kib("VmRSS") or rss) * 1024
                self._ok = True
                self.source = "VmHWM - VmRSS before (resident set, /proc/self/status)"
            else:
                self.source = "unavailable: no resettable /proc/self VmHWM"
        else:
            self.source = f"unavailable on {self.kind}"
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._ok:
            return
        if self.kind == "cuda":
            import torch

            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            peak = (_proc_status_kib("VmHWM") or 0) * 1024
        self.peak_bytes = max(0, peak - self._base)

    @property
    def peak_mib(self) -> float | None:
        return None if self.peak_bytes is None else self.peak_bytes / _MIB


# -- the machine ----------------------------------------------------------------


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux, else ``platform``)."""
    from gptkit.system.cpu import model_name

    return model_name()


def gptkit_commit() -> str | None:
    """``git describe --always --dirty --tags`` of the checkout gptkit runs
    from; None for an installed package (no git checkout around it)."""
    import subprocess
    from pathlib import Path

    source = Path(__file__).resolve().parents[1]  # .../gptkit
    try:
        out = subprocess.run(
            ["git", "-C", str(source), "describe", "--always", "--dirty", "--tags"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def invoked_command() -> str:
    """The command line this process was started with, as a shell would
    take it (``gptkit bench ...`` for the console script)."""
    import shlex

    argv = list(sys.argv)
    if argv and os.path.basename(argv[0]) in ("gptkit", "gptkit.exe", "__main__.py"):
        argv[0] = "gptkit"
    return shlex.join(argv)


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask), else cpu_count."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def load_average() -> float | None:
    """The 1-minute load average (None where the OS has none)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def _cpu_features() -> dict[str, Any]:
    """The CPU's instruction-set flags that matter to the kernels, and torch's
    capability (read once per process)."""
    from gptkit.system.cpu import features

    return features()


def machine_info(device: Any) -> dict[str, Any]:
    """What the numbers were measured on: CPU, cores, memory, GPU, versions."""
    import torch

    from gptkit._version import __version__

    mem_kib = None
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem_kib = int(line.split()[1])
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cores": usable_cores(),
        "torch_threads": torch.get_num_threads(),
        "cpu_features": _cpu_features(),
        "memory_gib": round(mem_kib / _MIB, 1) if mem_kib else None,
        "load_average_1min": load_average(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "gptkit": __version__,
        "gptkit_commit": gptkit_commit(),
        "command": invoked_command(),
        "device": str(device),
        "gpu": None,
    }
    if getattr(device, "type", str(device)) == "cuda":
        index = torch.device(device).index or 0
        props = torch.cuda.get_device_properties(index)
        info["gpu"] = torch.cuda.get_device_name(index)
        info["gpu_memory_gib"] = round(props.total_memory / 1024**3, 1)
        info["cuda"] = torch.version.cuda
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:
        info["transformers"] = None
    return info


def provenance_lines(result: dict[str, Any]) -> list[str]:
    """The header lines that say where and how a result was measured: the
    command, the date, the machine (CPU model and features, cores, threads,
    GPU, load average) and the versions (torch, gptkit and its commit)."""
    mach = result.get("machine", {})
    features = mach.get("cpu_features")
    if isinstance(features, dict):  # {"model", "flags", "torch_capability"}
        features = features.get("flags")
    cpu = mach.get("cpu", "?")
    if features is not None:
        cpu += f" [{' '.join(features) or 'none of ' + '/'.join(FLAGS[:3])}]"
    load = mach.get("load_average_1min")
    end = mach.get("load_average_1min_end")
    load_text = "?" if load is None else f"{load:g}"
    if end is not None:
        load_text += f" -> {end:g}"
    commit = mach.get("gptkit_commit")
    version = f"gptkit {mach.get('gptkit', '?')}" + (f" ({commit})" if commit else "")
    return [
        f"command: {mach.get('command', '?')}",
        f"date: {result.get('created', '?')}",
        f"machine: {cpu}, {mach.get('usable_cores', '?')} cores,"
        f" {mach.get('torch_threads', '?')} torch threads"
        + (f", {mach['gpu']}" if mach.get("gpu") else "")
        + f"; load average {load_text}",
        f"versions: torch {mach.get('torch', '?')}, {version},"
        f" python {mach.get('python', '?')}",
    ]


def busy_warning(info: dict[str, Any]) -> str | None:
    """A one-line note when other processes compete for the CPU."""
    load, cores = info.get("load_average_1min"), info.get("usable_cores") or 1
    if load is not None and load > cores:
        return (
            f"note: load average {load:g} on {cores} cores: other processes compete"
            " for the CPU, so timings are noisy (the spread of the repeats is"
            " recorded; `gptkit bench compare` accounts for it)"
        )
    return None
