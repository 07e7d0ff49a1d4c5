"""Per-process peak memory of training under DDP and FSDP, side by side.

For each strategy, torchrun starts ``--processes`` processes (gloo on the CPU,
NCCL on CUDA) that each build the preset's model, wrap it as ``gptkit train``
does (``Trainer`` with ``strategy=ddp|fsdp``) and take ``--steps`` optimizer
steps on a fixed random batch. Each process reports:

- its peak memory during the training steps: the resident-set high-water mark
  (``VmHWM``, reset once the trainer is built) on the CPU, or
  ``torch.cuda.max_memory_allocated`` on a GPU; and the CPU peak while setting
  up (every process builds the whole model before FSDP shards it, as ``gptkit
  train`` does: the book's initialisation needs the whole model);
- the bytes of parameters, gradients and AdamW state it holds (its shards
  under FSDP, whole tensors under DDP).

    python benchmarks/scripts/fsdp_memory.py --preset gpt2-355m --context-length 128

prints a table and one JSON line. The strategies run one after the other, so
their processes never share the machine's memory.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MIB = 1024 * 1024


def _status_kib(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _local_bytes(tensors) -> int:
    total = 0
    for t in tensors:
        local = t.to_local() if hasattr(t, "to_local") else t
        total += local.numel() * local.element_size()
    return total


def _reset_peak() -> None:
    """Start VmHWM again from the current resident set (Linux)."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
    except OSError:
        pass


def worker(args: argparse.Namespace) -> None:
    """One process of the group: train, then print a JSON line."""
    import torch

    from gptkit.bench.training import batch_as_data
    from gptkit.core.config import get_preset
    from gptkit.core.distributed import init_distributed, shutdown
    from gptkit.core.model import GPTModel
    from gptkit.core.registry import get_registry
    from gptkit.core.settings import TrainSettings
    from gptkit.core.training.trainer import Trainer

    if args.default_malloc:  # keep glibc's defaults (gptkit tunes them on Linux)
        import gptkit.system.allocator

        gptkit.system.allocator.tune_cpu_allocator = lambda: False
    dist, device = init_distributed(args.device)
    cfg = get_preset(args.preset).replace(context_length=args.context_length)
    torch.manual_seed(0)
    model = GPTModel(cfg).to(device)
    g = torch.Generator().manual_seed(dist.rank)
    ids = torch.randint(
        0, cfg.vocab_size, (args.batch_size, cfg.context_length + 1), generator=g
    )
    x, y = ids[:, :-1].to(device), ids[:, 1:].to(device)
    trainer = Trainer(
        model,
        batch_as_data(x),
        TrainSettings(
            strategy=args.strategy, precision=args.precision, max_new_tokens=0
        ),
        device=device,
        scheduler=get_registry().schedulers.create("constant"),
        dist=dist,
    )
    batches = itertools.repeat((x, y))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    setup_peak = _status_kib("VmHWM") * 1024
    _reset_peak()
    started = time.perf_counter()
    for _ in range(args.steps):
        loss = trainer.train_step(batches)
    seconds = time.perf_counter() - started
    params = list(trainer.model.parameters())
    grads = [p.grad for p in params if p.grad is not None]
    optimizer_state = [
        v for s in trainer.optimizer.state.values() for v in s.values() if v.dim()
    ]
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
        source = "torch.cuda.max_memory_allocated"
    else:
        peak = _status_kib("VmHWM") * 1024
        source = "VmHWM (peak resident set)"
    result = json.dumps(
        {
            "strategy": args.strategy,
            "rank": dist.rank,
            "processes": dist.world_size,
            "peak_mib": peak / MIB,
            "peak_source": source,
            "setup_peak_mib": setup_peak / MIB,
            "parameters_mib": _local_bytes(params) / MIB,
            "gradients_mib": _local_bytes(grads) / MIB,
            "optimizer_mib": _local_bytes(optimizer_state) / MIB,
            "seconds_per_step": seconds / args.steps,
            "loss": loss,
        }
    )
    (Path(args.results) / f"rank-{dist.rank}.json").write_text(result)
    shutdown()


def launch(args: argparse.Namespace, strategy: str) -> list[dict]:
    """Run one strategy under torchrun; what each worker reported."""
    repo = Path(__file__).resolve().parents[1]
    results = Path(tempfile.mkdtemp(prefix="fsdp-memory-"))
    env = {
        **os.environ,
        "PYTHONPATH": f"{repo / 'src'}{os.pathsep}{repo}",
        "OMP_NUM_THREADS": os.environ.get(
            "OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // args.processes))
        ),
    }
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc-per-node={args.processes}", str(Path(__file__).resolve()),
        "--worker", "--strategy", strategy, "--preset", args.preset,
        "--context-length", str(args.context_length), "--batch-size",
        str(args.batch_size), "--steps", str(args.steps), "--precision",
        args.precision, "--device", args.device, "--results", str(results),
        *(["--default-malloc"] if args.default_malloc else []),
    ]  # fmt: skip
    out = subprocess.run(command, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"{strategy} failed:\n{out.stderr[-4000:]}")
    rows = [json.loads(p.read_text()) for p in sorted(results.glob("rank-*.json"))]
    shutil.rmtree(results, ignore_errors=True)
    return sorted(rows, key=lambda r: r["rank"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="gpt2-355m")
    parser.add_argument("--context-length", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--strategies", default="fsdp,ddp")
    parser.add_argument(
        "--default-malloc",
        action="store_true",
        help="glibc's default allocator settings instead of gptkit's tuning",
    )
    parser.add_argument("--strategy", help=argparse.SUPPRESS)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--results", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    rows = []
    for strategy in args.strategies.split(","):
        rows += launch(args, strategy)
    print(
        f"{args.preset}, context {args.context_length}, batch {args.batch_size} per"
        f" process, {args.processes} processes, {args.precision}, {args.steps} steps"
    )
    print(
        f"{'strategy':8s} {'rank':>4s} {'set-up MiB':>10s} {'peak MiB':>9s}"
        f" {'params':>8s} {'grads':>8s} {'AdamW':>8s} {'s/step':>7s}  loss"
    )
    for r in rows:
        print(
            f"{r['strategy']:8s} {r['rank']:4d} {r['setup_peak_mib']:10.0f}"
            f" {r['peak_mib']:9.0f}"
            f" {r['parameters_mib']:8.0f} {r['gradients_mib']:8.0f}"
            f" {r['optimizer_mib']:8.0f} {r['seconds_per_step']:7.1f}  {r['loss']:.4f}"
        )
    print(json.dumps({"settings": vars(args), "rows": rows}))


if __name__ == "__main__":
    main()
