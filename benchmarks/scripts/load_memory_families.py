"""Peak memory of loading a Llama 3 / Qwen3 checkpoint with the hf: loader.

Writes a random checkpoint shaped like a preset (default ``qwen3-0.6b``, bf16:
1.2 GB) in ``Qwen3ForCausalLM``'s layout, streamed to disk one tensor at a
time, then loads it in a fresh process with ``model_from_spec("hf:DIR")`` (bf16
kept) and reports the peak resident memory above the imports' baseline against
the file size. The loader reads one tensor at a time from the mapped file and
assigns it to a model made on the meta device, so the peak should be about one
copy of the weights.

    python benchmarks/scripts/load_memory_families.py
    python benchmarks/scripts/load_memory_families.py --preset llama-3.2-1b
    python benchmarks/scripts/load_memory_families.py \
        --out benchmarks/results/load-memory-qwen3-0.6b-bf16.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ST_DTYPES = {torch.bfloat16: "BF16", torch.float32: "F32"}


def write_checkpoint(out: Path, preset: str, dtype: torch.dtype) -> int:
    from gptkit.core.architectures import architecture_of
    from gptkit.core.config import get_preset

    cfg = get_preset(preset)
    arch = architecture_of(cfg)
    shapes = {name: shape for name, (_, shape) in arch.hf_tensors(cfg).items()}
    itemsize = torch.empty((), dtype=dtype).element_size()
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape in shapes.items():
        nbytes = itemsize * int(torch.Size(shape).numel())
        header[name] = {
            "dtype": ST_DTYPES[dtype],
            "shape": list(shape),
            "data_offsets": [offset, offset + nbytes],
        }
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    out.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(0)
    with open(out / "model.safetensors", "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for shape in shapes.values():
            tensor = torch.randn(shape, generator=generator).mul_(0.02).to(dtype)
            f.write(
                tensor.view(torch.int16 if itemsize == 2 else torch.int32)
                .numpy()
                .tobytes()
            )
            del tensor
    config = arch.config_to_hf(cfg, str(dtype).removeprefix("torch."))
    (out / "config.json").write_text(json.dumps(config, indent=2))
    return (out / "model.safetensors").stat().st_size


def rss_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024 / 1e6
    raise RuntimeError(f"no {field} in /proc/self/status")


def measure(directory: str) -> dict[str, float]:
    from gptkit.formats.models import model_from_spec

    baseline = rss_mb("VmRSS")
    start = time.perf_counter()
    model, _ = model_from_spec(f"hf:{directory}")
    seconds = time.perf_counter() - start
    dtypes = sorted({str(p.dtype) for p in model.parameters()})
    return {
        "baseline_rss_mb": baseline,
        "peak_rss_mb": rss_mb("VmHWM"),
        "seconds": seconds,
        "parameters": sum(p.numel() for p in model.parameters()),
        "dtypes": dtypes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="qwen3-0.6b")
    parser.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16")
    parser.add_argument("--dir", type=Path)
    parser.add_argument("--out", type=Path, help="also write the result here (JSON)")
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(str(args.dir))))
        return
    temporary = args.dir is None
    directory = args.dir or Path(tempfile.mkdtemp(prefix="gptkit-load-memory-"))
    try:
        report(args, directory)
    finally:
        if temporary:
            shutil.rmtree(directory, ignore_errors=True)


def machine() -> dict[str, object]:
    """The CPU model and flags, the torch version and the commit measured."""
    info: dict[str, str] = {}
    with open("/proc/cpuinfo") as f:
        for line in f:
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parent,
    ).stdout.strip()
    return {
        "cpu": info.get("model name", platform.processor()),
        "cpu_flags": info.get("flags", ""),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "commit": commit,
    }


def report(args: argparse.Namespace, directory: Path) -> None:
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    if not (directory / "model.safetensors").is_file():
        write_checkpoint(directory, args.preset, dtype)
    file_mb = (directory / "model.safetensors").stat().st_size / 1e6
    child = subprocess.run(
        [sys.executable, __file__, "--dir", str(directory), "--measure"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    result = json.loads(child.stdout.strip().splitlines()[-1])
    loaded = result["peak_rss_mb"] - result["baseline_rss_mb"]
    print(
        f"{args.preset} {args.dtype}: file {file_mb:,.0f} MB, peak RSS above the"
        f" imports {loaded:,.0f} MB = {loaded / file_mb:.2f}x the file;"
        f" {result['parameters']:,} parameters in {result['dtypes']},"
        f" loaded in {result['seconds']:.1f} s"
    )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        row = {
            "preset": args.preset,
            "dtype": args.dtype,
            "file_mb": file_mb,
            "loaded_mb": loaded,
            "ratio": loaded / file_mb,
            **result,
            "machine": machine(),
        }
        args.out.write_text(json.dumps(row, indent=2) + "\n")


if __name__ == "__main__":
    main()
