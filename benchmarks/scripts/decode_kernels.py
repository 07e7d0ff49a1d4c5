# ruff: noqa: E402  (a measurement script: set-up before imports, table rows)
"""One decoding step's matrix products on GPT-2 124M's shapes: every int8/int4/bf16
path PyTorch offers on this CPU against gptkit's kernels, as the share of each
path's own bandwidth bound (weight bytes / measured copy bandwidth).

    python benchmarks/scripts/decode_kernels.py [--threads 1,2] [--rows 1,4,16]
        [--rounds 5]
        [--no-compile] [--json out.json]

Contenders (those that fail or do not exist here are reported as such):

- ``fp32``: ``F.linear``; ``bf16``: ``F.linear`` with bf16 weights and input;
- ``int_mm``: ``torch._int_mm`` (int8 x int8 -> int32) after a per-row int8
  quantization of the input (in torch), scales applied after;
- ``qdynamic``: ``torch.ops.quantized`` dynamic linear (fbgemm/onednn, int8
  per-channel weights, input quantized per call);
- ``int8pack``: ``torch._weight_int8pack_mm`` (weight-only int8);
- ``int8 compiled``: ``torch.compile`` (Inductor) of the weight-only int8 form
  ``F.linear(x, w.to(float)) * scale``;
- ``int4pack``: ``torch._weight_int4pack_mm_for_cpu`` (group 64);
- gptkit's backends of :mod:`gptkit.plugins.quantizers.linear` (each ISA the
  CPU runs).

Timing: each contender cycles through copies of its weights totalling
``--cold-mib`` (96 MiB: past this CPU's 32 MiB L3), as a decoding step streams
every layer from memory; interleaved rounds (each contender once per round),
the median round's time per call. The load average is printed with
each table, since the machine may be shared.
"""

import argparse
import copy
import json
import os
import statistics
import time
import warnings
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

warnings.filterwarnings("ignore")

from gptkit.bench.limits import measure_bandwidth
from gptkit.bench.measure import cpu_model
from gptkit.plugins.quantizers import formats
from gptkit.plugins.quantizers.linear import Int4Linear, Int8Linear, available_backends
from gptkit.system import cpu

CLOCK = time.perf_counter
SHAPES = [(2304, 768), (768, 768), (3072, 768), (768, 3072), (50257, 768)]


def contenders(lin, compile_ok):
    """name -> (factory of a callable(x) with its own copy of the weights,
    weight bytes read per call)."""
    n, k = lin.weight.shape
    out = {}
    w = lin.weight.detach()
    out["fp32"] = (lambda: partial(F.linear, weight=w.clone()), w.numel() * 4)
    wb = w.to(torch.bfloat16)

    def bf16(x, wb):
        return F.linear(x.to(torch.bfloat16), wb).float()

    out["bf16"] = (lambda: partial(bf16, wb=wb.clone()), w.numel() * 2)
    q, s = formats.quantize_int8(w)

    def int_mm(x, qt, s):
        sx = x.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / 127
        xq = torch.round(x / sx).to(torch.int8)
        if xq.shape[0] <= 16:  # _int_mm wants more than 16 rows
            xq = F.pad(xq, (0, 0, 0, 17 - xq.shape[0]))
        return torch._int_mm(xq, qt)[: x.shape[0]].float() * sx * s

    bytes8 = n * k + n * 4
    bytes4 = n * k // 2 + n * k // 64 * 8
    out["int_mm"] = (lambda: partial(int_mm, qt=q.t().contiguous(), s=s), bytes8)
    try:
        dyn = torch.ao.quantization.quantize_dynamic(
            nn.Sequential(lin), {nn.Linear}, dtype=torch.qint8
        )
        out["qdynamic"] = (lambda: copy.deepcopy(dyn), bytes8)
    except Exception as exc:
        print(f"# qdynamic unavailable: {exc}")
    out["int8pack"] = (
        lambda: partial(torch._weight_int8pack_mm, mat2=q.clone(), scales=s),
        bytes8,
    )
    if compile_ok:
        compiled = torch.compile(
            lambda x, q, s: F.linear(x, q.to(x.dtype)) * s, dynamic=False
        )
        out["int8 compiled"] = (lambda: partial(compiled, q=q.clone(), s=s), bytes8)
    m8s = {b: Int8Linear.from_linear(lin, b) for b in available_backends()}
    for b, m in m8s.items():
        out[f"int8 {b}"] = (lambda m=m: copy.deepcopy(m), bytes8)
    m4s = {b: Int4Linear.from_linear(lin, 64, b) for b in available_backends()}
    for b, m in m4s.items():
        out[f"int4 {b}" if b != "aten" else "int4pack"] = (
            lambda m=m: copy.deepcopy(m),
            bytes4,
        )
    return out


def measure(fns, x, copies_bytes, rounds, skip):
    """Median seconds per call; each contender cycles through copies of its
    weights covering ``copies_bytes`` (beyond the last-level cache), as a
    decoding step streams every layer's weights from memory."""
    made, times = {}, {}
    with torch.inference_mode():
        for name, (factory, nbytes) in fns.items():
            if skip and skip(name):
                continue
            copies = max(1, -(-copies_bytes // nbytes))
            try:
                made[name] = [factory() for _ in range(copies)]
                for f in made[name][:2]:
                    f(x)
                start = time.perf_counter()
                made[name][0](x)
                first = time.perf_counter() - start
            except Exception as exc:
                print(f"# {name} failed: {type(exc).__name__}: {str(exc)[:100]}")
                made.pop(name, None)
                continue
            if first > 0.05 and copies > 1:  # far too slow: a few calls are enough
                made[name] = made[name][:2]
            times[name] = []
        for _ in range(rounds):
            for name, fs in made.items():
                start = CLOCK()
                for f in fs:
                    f(x)
                times[name].append((CLOCK() - start) / len(fs))
    return {k: statistics.median(v) for k, v in times.items()}


def bandwidth(mib=256, repeats=5):
    """Copy bandwidth (GB/s, read + write) with this run's clock, best of
    ``repeats`` (with the CPU clock, time descheduled is not counted)."""
    if CLOCK is time.perf_counter:
        return max(measure_bandwidth("cpu") for _ in range(3))
    src = torch.ones(mib << 18)
    dst = torch.empty_like(src)
    dst.copy_(src)
    best = float("inf")
    for _ in range(repeats):
        start = CLOCK()
        dst.copy_(src)
        best = min(best, CLOCK() - start)
    return 2 * src.nbytes / best / 1e9


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rows", default="1,4,16")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--shapes", default="")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--json")
    ap.add_argument(
        "--cold-mib",
        type=int,
        default=96,
        help="weights cycled per contender (beyond the last-level cache)",
    )
    ap.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="cpu: the process's CPU time (1 thread on a busy machine:"
        " time spent descheduled is not counted)",
    )
    ap.add_argument("--only", default="", help="comma-separated contenders")
    args = ap.parse_args()
    shapes = SHAPES
    if args.shapes:
        shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    only = {c.strip() for c in args.only.split(",") if c.strip()}
    skip = (lambda name: name not in only) if only else None
    feats = cpu.features()
    print(
        f"# CPU: {cpu_model()}; flags: {' '.join(feats['flags'])};"
        f" torch {torch.__version__} ({feats['torch_capability']}); clock: {args.clock}"
    )
    results = []
    for threads in [int(t) for t in args.threads.split(",")]:
        torch.set_num_threads(threads)
        bw = bandwidth()
        print(
            f"\n## {threads} thread(s): copy bandwidth {bw:.1f} GB/s;"
            f" load average {os.getloadavg()[0]:.2f} at the start"
        )
        for rows in [int(r) for r in args.rows.split(",")]:
            print(f"\n### {rows} row(s)\n")
            header = None
            for n, k in shapes:
                torch.manual_seed(0)
                lin = nn.Linear(k, n, bias=False)
                fns = contenders(lin, not args.no_compile)
                x = torch.randn(rows, k)
                got = measure(fns, x, args.cold_mib << 20, args.rounds, skip)
                if header is None:
                    header = list(fns)
                    print("| out x in | " + " | ".join(header) + " |")
                    print("|---|" + "---|" * len(header))
                cells = []
                for name in header:
                    t = got.get(name)
                    if t is None:
                        cells.append("n/a")
                        continue
                    share = fns[name][1] / (bw * 1e9) / t
                    cells.append(f"{t * 1e6:,.0f} µs ({share:.0%})")
                    results.append(
                        {
                            "threads": threads,
                            "rows": rows,
                            "n": n,
                            "k": k,
                            "contender": name,
                            "seconds": t,
                            "bytes": fns[name][1],
                            "bandwidth_gbs": bw,
                            "bound_share": share,
                        }
                    )
                print(f"| {n} x {k} | " + " | ".join(cells) + " |", flush=True)
        print(f"\n(load average {os.getloadavg()[0]:.2f} at the end)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "cpu": cpu_model(),
                    "features": feats,
                    "torch": torch.__version__,
                    "rows": results,
                },
                f,
                indent=1,
            )


if __name__ == "__main__":
    main()
