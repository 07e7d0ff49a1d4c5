"""``gptkit bench kernels``: the quantized layers' backends on a model's decode
shapes, as the share of each one's own memory-bandwidth bound.

For every linear shape of the model (out x in), every weight format (int8;
int4 with its group) and every backend that runs on this CPU (gptkit's kernel
sets, one per instruction set, and PyTorch's paths), plus the float32 product
for reference: the best round's time per call (CPU time at one thread, wall
time at more) with ``rows`` activation rows, cycling through copies of the
weights that together exceed ``cold_mib`` (a decoding step streams every layer
from memory, not from the caches); the bound is weight bytes / the measured
copy bandwidth (:mod:`gptkit.bench.limits`) at the same thread count.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

KIND = "gptkit-bench-kernels"


def model_shapes(preset: str) -> list[tuple[int, int]]:
    """(out, in) of the model's linear layers, each once, in model order."""
    from gptkit.core.config import get_preset

    cfg = get_preset(preset)
    d, h = cfg.emb_dim, 4 * cfg.emb_dim
    return list(dict.fromkeys([(d, d), (h, d), (d, h), (cfg.vocab_size, d)]))


def _fp32_seconds(n: int, k: int, rows: int, copies: int, rounds: int) -> float:
    import torch
    import torch.nn.functional as F

    clock = time.process_time if torch.get_num_threads() == 1 else time.perf_counter
    ws = [torch.randn(n, k) * 0.02 for _ in range(copies)]
    x = torch.randn(rows, k)
    with torch.inference_mode():
        F.linear(x, ws[0])
        times = []
        for _ in range(rounds):
            start = clock()
            for w in ws:
                F.linear(x, w)
            times.append((clock() - start) / copies)
    return min(times)


def run_kernels(
    preset: str = "gpt2-124m",
    kinds: tuple[str, ...] = ("int8", "int4"),
    group: int = 64,
    rows: int = 1,
    threads: list[int] | None = None,
    cold_mib: int = 96,
    rounds: int = 3,
    progress: Any = None,
) -> dict[str, Any]:
    import torch

    from gptkit.bench.limits import machine_limits
    from gptkit.bench.measure import machine_info, torch_threads
    from gptkit.plugins.quantizers import native, tuning

    say = progress or (lambda _: None)
    started = time.time()
    machine = machine_info("cpu")
    rows_out: list[dict[str, Any]] = []
    limits_out = {}
    for count in threads or [torch.get_num_threads()]:
        with torch_threads(count) as used:
            say(f"{used} thread(s): measuring the memory bandwidth ...")
            bandwidth = machine_limits("cpu", ("fp32",), fresh=True).bandwidth_gbs
            limits_out[str(used)] = bandwidth
            for n, k in model_shapes(preset):
                fp32_bytes = n * k * 4
                copies = max(1, -(-cold_mib * 2**20 // fp32_bytes))
                say(f"{n} x {k}: fp32")
                seconds = _fp32_seconds(n, k, rows, copies, rounds)
                rows_out.append(
                    _row(
                        n, k, "fp32", "torch", "-", seconds, fp32_bytes, bandwidth, used
                    )
                )
                for kind in kinds:
                    if kind == "int4" and k % group:
                        continue
                    nbytes = (
                        n * k + 4 * n
                        if kind == "int8"
                        else n * k // 2 + 8 * n * k // group
                    )
                    copies = max(1, -(-cold_mib * 2**20 // nbytes))
                    backends = [*native.available(kind), *tuning.TORCH_BACKENDS]
                    say(
                        f"{n} x {k}: {kind} x {len(backends)} backends, {copies} copies"
                    )
                    times = tuning.time_backends(
                        kind, n, k, group, backends, rows=rows, rounds=rounds,
                        max_weights=None, copies=copies, budget_s=0.02,
                    )  # fmt: skip
                    for backend, t in times.items():
                        isa = backend if backend in native.KERNEL_SETS else "-"
                        rows_out.append(
                            _row(n, k, kind, backend, isa, t, nbytes, bandwidth, used)
                        )
    machine["load_average_1min_end"] = machine_info("cpu")["load_average_1min"]
    return {
        "kind": KIND,
        "schema": 1,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "wall_seconds": round(time.time() - started, 1),
        "machine": machine,
        "settings": {
            "preset": preset,
            "kinds": list(kinds),
            "group_size": group,
            "rows": rows,
            "cold_mib": cold_mib,
            "rounds": rounds,
            "clock": "CPU time at 1 thread, wall time at more",
        },
        "bandwidth_gbs": limits_out,
        "rows": rows_out,
    }


def _row(n, k, kind, backend, isa, seconds, nbytes, bandwidth, threads):
    bound = nbytes / (bandwidth * 1e9)
    return {
        "shape": f"{n} x {k}",
        "out": n,
        "in": k,
        "format": kind,
        "backend": backend,
        "isa": isa,
        "threads": threads,
        "us": seconds * 1e6,
        "weight_bytes": nbytes,
        "gbs": nbytes / seconds / 1e9,
        "bound_share": bound / seconds,
    }


def format_kernels(result: dict[str, Any]) -> str:
    from gptkit.bench.report import features_line, table

    mach, s = result["machine"], result["settings"]
    head = [
        f"model shapes: {s['preset']}; {s['rows']} activation row(s); int4 group"
        f" {s['group_size']}; weights cycled past {s['cold_mib']} MiB; clock:"
        f" {s['clock']}, best of {s['rounds']} rounds",
        f"machine: {mach['cpu']}, {mach['usable_cores']} cores; torch"
        f" {mach['torch']}, gptkit {mach['gptkit']}; load average"
        f" {mach['load_average_1min']} -> {mach.get('load_average_1min_end')}",
        *([features_line(mach)] if features_line(mach) else []),
        "copy bandwidth: "
        + ", ".join(
            f"{t} thread(s) {b:.1f} GB/s" for t, b in result["bandwidth_gbs"].items()
        ),
    ]
    body = [
        [
            r["shape"],
            r["format"],
            r["backend"],
            r["isa"],
            str(r["threads"]),
            f"{r['us']:,.0f}",
            f"{r['gbs']:.1f}",
            f"{r['bound_share']:.0%}",
        ]
        for r in result["rows"]
    ]
    headers = ["shape", "format", "backend", "ISA", "threads", "µs", "GB/s", "of bound"]
    note = (
        "of bound: (weight bytes / copy bandwidth) / time; above 100% means"
        " the weights came partly from a cache"
    )
    return "\n".join([*head, "", table(headers, body), "", note])
