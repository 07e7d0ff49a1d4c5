"""Which kernel runs a quantized layer on this machine: measured, not guessed.

The first time a layer of a given kind and shape runs with ``backend=auto`` (or
``native``) at a given number of threads, every backend that can run it here is
timed on that shape (random weights of the layer's shape, at most
:data:`MAX_TIMED_WEIGHTS` of its rows; one activation row: a decoding step; a
few milliseconds per shape), and the fastest is kept. Backends within
:data:`COLD_MARGIN` of the fastest are then timed again *cold*, cycling through
copies of the weights that together exceed the CPU's last-level cache, as a
decoding step streams every layer from memory: the kernel fastest on weights
in the cache is not always the fastest on weights streamed from memory (on a
Zen 4 EPYC the AVX2 tiles beat the AVX-512 ones cold and lose warm); cold
times within :data:`COLD_TIE` of the fastest are a tie, which the warm time
breaks (the faster arithmetic, which also serves several rows best); a
layer holding tiles of another choice (another thread count's) keeps using
them within :data:`KEEP_MARGIN` (no second copy). The choice is kept — in
memory and in ``<gptkit cache>/kernels/choices-<key>.json``, where ``key``
hashes the CPU model, all of its flags, the gptkit version, the torch
version, the kernels' sources and the timing method (:data:`METHOD`).
Another CPU, another version or changed kernels therefore never reuse a
choice: they are measured again.
``-o backend=NAME`` (the quantizer option) skips all this.

Under ``torch.compile`` nothing is timed (a traced forward must not run
benchmarks): a layer whose choice was not measured yet uses a recorded choice
of another thread count for its shape, else the first kernel set of
:data:`native.PREFERENCE` that loads.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from gptkit.plugins.quantizers import native
from gptkit.system import cpu

#: Backends timed besides the native kernel sets (PyTorch's own paths).
TORCH_BACKENDS = ("aten", "torch")

_MEMORY: dict[str, dict[str, Any]] = {}
#: How choices are measured; part of the cache key, so that choices measured
#: the old way (2: cold timing added; 3: cold ties go to the faster warm) are
#: measured again.
METHOD = 3


def cache_key() -> str:
    import hashlib

    import torch

    from gptkit._version import __version__

    text = "|".join(
        (
            cpu.fingerprint(),
            __version__,
            torch.__version__,
            native.source_hash(),
            f"method{METHOD}",
        )
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cache_file() -> Path:
    return native.cache_root() / "kernels" / f"choices-{cache_key()}.json"


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data.get("choices", {}) if isinstance(data, dict) else {}


def _write(path: Path, choices: dict[str, Any]) -> None:
    """Merge into the file (another process may have added shapes) and
    replace it atomically; a cache that cannot be written is only slower."""
    import torch

    from gptkit._version import __version__

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        merged = {**_read(path), **choices}
        data = {
            "cpu": cpu.features(),
            "gptkit": __version__,
            "torch": torch.__version__,
            "choices": merged,
        }
        fd, tmp = tempfile.mkstemp(suffix=".json", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except OSError:
        pass


def _choices() -> dict[str, Any]:
    key = cache_key()
    if key not in _MEMORY:
        _MEMORY.clear()
        _MEMORY[key] = _read(cache_file())
    return _MEMORY[key]


def shape_key(kind: str, n: int, k: int, group: int, threads: int) -> str:
    shape = f"{kind} {n}x{k}" + (f" g{group}" if kind == "int4" else "")
    return f"{shape} t{threads}"


def candidates(kind: str, native_only: bool) -> list[str]:
    names = native.available(kind)
    return names if native_only else [*names, *TORCH_BACKENDS]


def make_layers(
    kind: str, n: int, k: int, group: int, backends: list[str], copies: int = 1
) -> list[dict]:
    """``copies`` sets of backend -> a layer of random weights of this shape
    with that backend (each set one copy of the weights, shared by its
    layers): :func:`gptkit.plugins.quantizers.linear.
    timing_layers`, registered by that module when it is imported (this
    module does not import it: the layers import this one)."""
    if LAYER_FACTORY is None:
        import importlib

        importlib.import_module("gptkit.plugins.quantizers.linear")
    return LAYER_FACTORY(kind, n, k, group, backends, copies)  # type: ignore[misc]


#: Set by :mod:`gptkit.plugins.quantizers.linear` on import.
LAYER_FACTORY: Any = None


#: Weights per timed layer at most: a taller layer (the output head) is timed
#: on its first rows (a product's time grows with its rows), so that PyTorch's
#: slower paths cost milliseconds, not seconds.
MAX_TIMED_WEIGHTS = 4 * 1024 * 1024


def time_backends(
    kind: str,
    n: int,
    k: int,
    group: int,
    backends: list[str],
    rows: int = 1,
    budget_s: float = 0.002,
    rounds: int = 5,
    max_weights: int | None = MAX_TIMED_WEIGHTS,
    copies: int = 1,
) -> dict[str, float]:
    """backend -> seconds per call on this shape: the best of interleaved
    rounds (each round calls each backend for about ``budget_s``; on a shared
    machine noise only adds time, and with several threads a round whose
    thread waited for a busy core is far off, so the median misleads). A backend whose
    first call takes over 4x the fastest first call is timed no further (its
    single call is reported). With one thread the clock is the process's CPU
    time of a round's calls, so time spent descheduled on a shared machine is
    not charged to a kernel; with several, the wall time of the round's
    fastest single call (a parallel call waits for its slowest thread, and
    on a shared machine one of them often waits for a core).

    ``max_weights``: time at most that many weights' rows (None: all);
    ``copies``: cycle through that many copies of the weights (past the CPU's
    caches, as a decoding step streams every layer from memory)."""
    import torch

    # One thread: CPU time (time descheduled is not charged). Several: the
    # process's CPU time would count threads spinning at the parallel
    # region's end while one of them waits for a core, so wall time.
    clock = time.process_time if torch.get_num_threads() == 1 else time.perf_counter
    if max_weights is not None:
        n = max(1, min(n, max_weights // k))
    x = torch.randn(rows, k, generator=torch.Generator().manual_seed(1))
    sets = make_layers(kind, n, k, group, backends, copies)
    several = torch.get_num_threads() > 1

    def once(b: str, layers: dict) -> float:
        start = clock()
        layers[b](x)
        return clock() - start

    first: dict[str, float] = {}
    with torch.inference_mode():
        for b in backends:
            for layers in sets:
                layers[b](x)  # warm-up: aten and the integer kernels pack on first use
            # several threads: the best of 3 first calls (one of them may
            # have waited for a core held by another process)
            first[b] = min(
                once(b, sets[-1 - i % copies]) for i in range(1 + 2 * several)
            )
        best = min(first.values())
        timed = {b: [] for b in backends if first[b] <= 4 * best}  # type: ignore[var-annotated]
        for _ in range(rounds):
            for b in timed:
                per_set = max(1, int(budget_s / max(first[b], 1e-7)) // copies)
                calls = min(50, per_set) * copies
                if several:  # wall time: the fastest single call of the round
                    timed[b].append(
                        min(once(b, sets[i % copies]) for i in range(calls))
                    )
                    continue
                start = clock()
                for i in range(calls):
                    sets[i % copies][b](x)
                timed[b].append((clock() - start) / calls)
    return {b: min(timed[b]) if b in timed else first[b] for b in backends}


#: Backends within this factor of the fastest warm time are timed again cold.
COLD_MARGIN = 2.0
#: Cold times within this fraction of the fastest are a tie (the memory is the
#: limit), broken by the warm time (the arithmetic): on a Zen 4 EPYC the AVX2
#: and AVX-512 int8 tiles stream one row within 1% of each other, and the
#: AVX-512 ones take half the time with the 4 rows of a beam search.
COLD_TIE = 0.03
#: A layer keeps the packed weights it holds (chosen at another thread count)
#: when their backend's cold time is within this fraction of the choice's.
KEEP_MARGIN = 0.10
#: Bytes the cold timing cycles through (past a last-level cache of up to half
#: of it), and the most copies of one layer it makes.
COLD_BYTES = 64 * 2**20
MAX_COPIES = 128


def cold_copies(kind: str, n: int, k: int) -> int:
    """Copies of a layer of this shape (its timed rows) totalling
    :data:`COLD_BYTES` of weights."""
    n = max(1, min(n, MAX_TIMED_WEIGHTS // k))
    nbytes = n * k if kind == "int8" else n * k // 2
    return max(1, min(MAX_COPIES, -(-COLD_BYTES // max(nbytes, 1))))


def measure_choice(kind: str, n: int, k: int, group: int, backends: list[str]) -> dict:
    """``{"backend", "us": warm times, "us_cold": cold times}`` (see the module
    docs): the backend fastest cold among those close to the fastest warm,
    a cold tie (:data:`COLD_TIE`) going to the faster warm."""
    warm = time_backends(kind, n, k, group, backends)
    fastest = min(warm.values())
    close = [b for b in backends if warm[b] <= COLD_MARGIN * fastest]
    entry: dict[str, Any] = {"us": {b: round(t * 1e6, 1) for b, t in warm.items()}}
    if len(close) == 1:
        entry["backend"] = close[0]
        return entry
    cold = time_backends(kind, n, k, group, close, copies=cold_copies(kind, n, k))
    entry["us_cold"] = {b: round(t * 1e6, 1) for b, t in cold.items()}
    fastest_cold = min(cold.values())
    tied = [b for b in close if cold[b] <= (1 + COLD_TIE) * fastest_cold]
    entry["backend"] = min(tied, key=warm.__getitem__)
    return entry


def choose(
    kind: str,
    n: int,
    k: int,
    group: int,
    threads: int,
    native_only: bool = False,
    measure: bool = True,
    keep: str | None = None,
) -> str | None:
    """The backend for a layer (see the module docs); None when no native
    kernel loads and ``native_only``. ``keep``: the backend whose packed
    weights the layer holds (chosen at another thread count), kept when its
    cold time is within :data:`KEEP_MARGIN` of the choice's, so that the
    layer makes no second copy of its weights for a few per cent."""
    names = candidates(kind, native_only)
    if not names:
        return None
    choices = _choices()
    key = shape_key(kind, n, k, group, threads) + (" native" if native_only else "")
    entry = choices.get(key)
    if entry is not None and entry.get("backend") in names:
        cold = entry.get("us_cold", {})
        if keep in names and keep in cold and entry["backend"] in cold:
            if cold[keep] <= (1 + KEEP_MARGIN) * cold[entry["backend"]]:
                return keep
        return str(entry["backend"])
    if not measure:
        prefix = key.rsplit(" t", 1)[0] + " t"
        for other, value in choices.items():
            if other.startswith(prefix) and value.get("backend") in names:
                return str(value["backend"])
        return names[0]
    import torch

    before = torch.get_num_threads()
    choices[key] = measure_choice(kind, n, k, group, names)
    torch.set_num_threads(before)
    _write(cache_file(), {key: choices[key]})
    return choose(kind, n, k, group, threads, native_only, keep=keep)


def forget() -> None:
    """Drop the in-memory choices (tests; the file stays)."""
    _MEMORY.clear()
