"""The decoding attention kernel (gptkit.system.decode_attention) over a KV
cache in its two layouts, read cold as a decoding step reads it:

- ``position-major``: each position's heads side by side, (rows, capacity,
  heads, head_dim) — gptkit's KVCache; the kernel sweeps a row's positions
  once for all its heads;
- ``head-major``: each head's positions together, (rows, heads, capacity,
  head_dim) — the kernel reads head by head: one short run per head, with the
  unfilled capacity between runs.

    python benchmarks/scripts/cache_layout.py [--rows 1,4] [--lengths 100,200]
        [--capacity 260] [--layers 64] [--threads 1,2] [--rounds 3]
        [--json out.json]

``--layers`` caches of a 124M model's shape (12 heads of 64) are attended one
after the other, so that each is read from memory, not from the CPU's caches
(64 layers x 4 rows x 260 slots: 400 MB); a round times every layout once per
setting, alternating; the best round is reported per 12 layers (one 124M
step's attention) with the bytes of keys and values read per second. Both
layouts give the same bits (checked here too).
"""

import argparse
import json
import time

import torch

from gptkit.bench.measure import machine_info
from gptkit.system import decode_attention

HEADS, DIM = 12, 64


def caches(layout: str, layers: int, rows: int, capacity: int) -> list[torch.Tensor]:
    """``layers`` (2, rows, heads, capacity, dim) views: keys and values."""
    if layout == "head-major":
        return [torch.randn(2, rows, HEADS, capacity, DIM) for _ in range(layers)]
    return [
        torch.randn(2, rows, capacity, HEADS, DIM).transpose(2, 3)
        for _ in range(layers)
    ]


def seconds(stores: list[torch.Tensor], q: torch.Tensor, length: int) -> float:
    start = time.perf_counter()
    for kv in stores:
        decode_attention.attend(q, kv[0, :, :, :length], kv[1, :, :, :length], None)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default="1,4")
    parser.add_argument("--lengths", default="100,200")
    parser.add_argument("--capacity", type=int, default=260)
    parser.add_argument("--layers", type=int, default=64)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if decode_attention.library() is None:
        raise SystemExit(
            "the decoding kernels do not build here (no AVX2 or no C compiler)"
        )
    layouts = ("head-major", "position-major")
    results = []
    for threads in map(int, args.threads.split(",")):
        torch.set_num_threads(threads)
        for rows in map(int, args.rows.split(",")):
            stores = {
                name: caches(name, args.layers, rows, args.capacity) for name in layouts
            }
            q = torch.randn(rows, HEADS, 1, DIM)
            for length in map(int, args.lengths.split(",")):
                # the same values in both layouts (layer 0): the same bits out
                head, pos = stores["head-major"][0], stores["position-major"][0]
                head.copy_(pos)
                same = torch.equal(
                    *(
                        decode_attention.attend(
                            q, kv[0, :, :, :length], kv[1, :, :, :length], None
                        )
                        for kv in (head, pos)
                    )
                )
                best = {name: float("inf") for name in layouts}
                for _ in range(args.rounds):
                    for name in layouts:
                        best[name] = min(best[name], seconds(stores[name], q, length))
                nbytes = 2 * args.layers * rows * HEADS * length * DIM * 4
                row = {
                    "threads": threads,
                    "rows": rows,
                    "length": length,
                    "same_bits": same,
                }
                for name in layouts:
                    row[f"{name}_ms_per_12_layers"] = (
                        best[name] * 1e3 / args.layers * 12
                    )
                    row[f"{name}_gbs"] = nbytes / best[name] / 1e9
                row["speedup"] = best["head-major"] / best["position-major"]
                results.append(row)
                hm, pm = (row[f"{n}_ms_per_12_layers"] for n in layouts)
                hg, pg = (row[f"{n}_gbs"] for n in layouts)
                print(
                    f"{threads}t {rows} rows {length} positions: head-major "
                    f"{hm:.3f} ms ({hg:.1f} GB/s), position-major {pm:.3f} ms "
                    f"({pg:.1f} GB/s): {row['speedup']:.2f}x, same bits {same}"
                )
            del stores
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "machine": machine_info("cpu"),
                    "settings": vars(args),
                    "rows": results,
                },
                f,
                indent=1,
            )


if __name__ == "__main__":
    main()
