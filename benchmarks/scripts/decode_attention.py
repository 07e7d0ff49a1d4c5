# ruff: noqa: E402  (a measurement script: set-up before imports)
"""A decoding path switched on and off inside the whole decoding loop of a
124M-shaped GPT-2 (or ``--preset``'s model; random weights; batch 1), per
precision and thread count:

- ``--switch attention`` (default): a decoding step's attention, gptkit's C
  kernel (gptkit.system.decode_attention) against PyTorch's
  scaled_dot_product_attention;
- ``--switch fused``: a quantized model's whole decoding step in one C call
  (gptkit.plugins.quantizers.fused) against the model's Python forward (the
  same kernels, called layer by layer).

    python benchmarks/scripts/decode_attention.py [--switch attention|fused]
        [--preset gpt2-124m] [--threads 1,2] [--precisions fp32,int8,int4,bf16]
        [--prompt 20] [--new 200] [--rounds 5] [--json out.json]

Each round decodes ``--new`` tokens after a ``--prompt``-token prefill once with
the path on and once off, alternating; the best round of each is reported (the
machine may be shared), with the load average.
"""

import argparse
import json
import os
import time
import warnings

import torch

warnings.filterwarnings("ignore")

from gptkit.bench.measure import cpu_model
from gptkit.core.config import get_preset
from gptkit.core.model import GPTModel, KVCache
from gptkit.core.quantize import quantize_model
from gptkit.core.weights import build_model
from gptkit.formats.models import accelerate_bf16
from gptkit.system import cpu, decode_attention


def model_for(precision: str, preset: str) -> GPTModel:
    torch.manual_seed(0)
    model = build_model(get_preset(preset)).eval()
    if precision == "bf16":  # what `gptkit generate --dtype bf16` runs
        return accelerate_bf16(model.to(torch.bfloat16).eval())
    return model if precision == "fp32" else quantize_model(model, precision)


def decode_seconds(model: GPTModel, prompt: int, new: int) -> float:
    """Seconds per decoded token (greedy, one row, cache of prompt + new)."""
    cfg = model.cfg
    dtype = next(model.parameters(), torch.empty(0)).dtype
    dtype = dtype if dtype.is_floating_point else torch.float32
    ids = torch.arange(prompt)[None] % cfg.vocab_size
    cache = KVCache.allocate(cfg, 1, prompt + new, "cpu", dtype)
    with torch.inference_mode():
        tok = model(ids, cache=cache)[:, -1].argmax(-1, keepdim=True)
        start = time.perf_counter()
        for _ in range(new - 1):
            tok = model(tok, cache=cache)[:, -1].argmax(-1, keepdim=True)
        return (time.perf_counter() - start) / (new - 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--switch", choices=("attention", "fused"), default="attention")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--precisions")
    parser.add_argument("--preset", default="gpt2-124m")
    parser.add_argument("--prompt", type=int, default=20)
    parser.add_argument("--new", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json")
    args = parser.parse_args()
    if decode_attention.library() is None:
        raise SystemExit(
            "the attention kernel does not build here (no AVX2 or no C compiler)"
        )
    kernel = decode_attention.attend
    on, off = ("kernel", "sdpa") if args.switch == "attention" else ("fused", "python")
    default = "fp32,int8,int4,bf16" if args.switch == "attention" else "int8,int4,bf16"
    rows = []
    print(f"# {cpu_model()}; flags: {' '.join(sorted(cpu.flags() & set(cpu.FLAGS)))}")
    for precision in (args.precisions or default).split(","):
        model = model_for(precision, args.preset)
        for threads in (int(t) for t in args.threads.split(",")):
            torch.set_num_threads(threads)
            decode_seconds(model, args.prompt, 8)  # warm up (kernel choice, packing)
            best = {on: float("inf"), off: float("inf")}
            fused = model.__dict__.get("fused_step")
            for _ in range(args.rounds):
                for name in best:
                    if name == "sdpa":
                        decode_attention.attend = lambda *a: None
                    if name == "python":
                        model.fused_step = None
                    try:
                        seconds = decode_seconds(model, args.prompt, args.new)
                    finally:
                        decode_attention.attend, model.fused_step = kernel, fused
                    best[name] = min(best[name], seconds)
            row = {
                "precision": precision,
                "threads": threads,
                f"{on}_tok_s": round(1 / best[on], 1),
                f"{off}_tok_s": round(1 / best[off], 1),
                "speedup": round(best[off] / best[on], 3),
                "load_avg": round(os.getloadavg()[0], 2),
            }
            rows.append(row)
            print(
                f"{precision:5s} {threads}t  {on} {row[f'{on}_tok_s']:7.1f} tok/s"
                f"  {off} {row[f'{off}_tok_s']:7.1f} tok/s  x{row['speedup']:.2f}"
                f"  (load {row['load_avg']})",
                flush=True,
            )
    if args.json:
        meta = {"cpu": cpu_model(), "switch": args.switch, "preset": args.preset,
                "prompt": args.prompt, "new": args.new, "rounds": args.rounds,
                "torch": torch.__version__}  # fmt: skip
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
