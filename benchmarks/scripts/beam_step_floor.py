"""How far a 124M model's quantized decoding step can go for 1 and 4 rows (greedy
against beam search's four beams): one step's matrix products alone, called
through gptkit's kernels exactly as the fused step calls them (ctypes, no
module overhead), weights streamed from memory (every layer in order, as a
step reads them) and warm (one 768 x 768 layer repeated, in the CPU's
caches: the arithmetic alone), with the share of the bench's bandwidth bound
(its weight bytes per token / the copy bandwidth) that a step made of those
products only would reach — an upper bound on what a whole step (plus
attention, norms, sampling) can reach.

    python benchmarks/scripts/beam_step_floor.py [--methods int8,int4]
        [--threads 1,2] [--rounds 30] [--json out.json]
"""

import argparse
import json
import time

import torch

from gptkit.bench.limits import bandwidth_bound, machine_limits, weight_bytes_per_token
from gptkit.bench.measure import machine_info, torch_threads
from gptkit.bench.runners import bench_model
from gptkit.core.quantize import quantize_model
from gptkit.plugins.quantizers.linear import _QuantizedLinear, kernel_call


def _calls(layers, rows: int) -> list[tuple]:
    """Each layer's kernel call for ``rows`` rows (the fused step's arguments)."""
    out = []
    for layer in layers:
        plan, _, extras = kernel_call(layer)
        x, y = (
            torch.randn(rows, layer.in_features),
            torch.empty(rows, layer.out_features),
        )
        out.append((plan[2], x, rows, layer.in_features, extras, y, layer.out_features))
    return out


def _run(calls: list[tuple], threads: int) -> None:
    for fn, x, rows, k, extras, y, n in calls:
        fn(x.data_ptr(), rows, k, *extras, y.data_ptr(), n, threads)


def _best(calls: list[tuple], threads: int, rounds: int, repeat: int = 1) -> float:
    for _ in range(3):
        _run(calls, threads)
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(repeat):
            _run(calls, threads)
        best = min(best, (time.perf_counter() - start) / repeat)
    return best


def measure(method: str, threads: int, rounds: int) -> list[dict]:
    model = quantize_model(bench_model("gpt2-124m"), method)
    layers = [m for m in model.modules() if isinstance(m, _QuantizedLinear)]
    weight_bytes = weight_bytes_per_token(model)  # the bench's ruler
    macs = sum(m.in_features * m.out_features for m in layers)
    with torch_threads(threads, "cpu"), torch.inference_mode():
        for m in layers:  # choose and remember each layer's kernel
            m(torch.randn(1, m.in_features))
        bandwidth = machine_limits("cpu", ("fp32",), fresh=True).bandwidth_gbs
        bound_ms = 1e3 / bandwidth_bound(weight_bytes, bandwidth)
        rows_out = []
        for rows in (1, 4):
            cold = _best(_calls(layers, rows), threads, rounds)
            probe = layers[1]  # the attention's output projection, 768 x 768
            warm = _best(_calls([probe], rows), threads, rounds, repeat=50)
            warm *= macs / (probe.in_features * probe.out_features)
            rows_out.append(
                {
                    "method": method,
                    "threads": threads,
                    "rows": rows,
                    "products_ms_from_memory": round(cold * 1e3, 3),
                    "products_ms_warm": round(warm * 1e3, 3),
                    "bound_ms": round(bound_ms, 3),
                    "share_of_bound_at_most": round(bound_ms / (cold * 1e3), 3),
                    "bandwidth_gbs": round(bandwidth, 1),
                }
            )
    return rows_out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", default="int8,int4")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    results = []
    print("| method | threads | rows | products from memory ms | warm ms | bound ms"
          " | at most of bound |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|")
    for method in args.methods.split(","):
        for threads in (int(t) for t in args.threads.split(",")):
            for r in measure(method, threads, args.rounds):
                results.append(r)
                print(
                    f"| {method} | {threads} | {r['rows']} |"
                    f" {r['products_ms_from_memory']:.2f} |"
                    f" {r['products_ms_warm']:.2f} |"
                    f" {r['bound_ms']:.2f} | {r['share_of_bound_at_most']:.0%} |"
                )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"machine": machine_info("cpu"), "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
