"""Peak memory of loading a large GPT-2 checkpoint with the hf: loader.

Writes a random checkpoint shaped like OpenAI's GPT-2 XL (1.56B parameters) in
the layout of ``openai-community/gpt2-xl``'s ``model.safetensors`` (``GPT2Model``
keys, ``h.N.attn.bias`` mask buffers; fp32 is 6.4 GB), then loads it in a fresh
process with ``model_from_spec("hf:DIR")`` and reports the process's peak
resident memory against the file size. The loader reads one tensor at a time
and ``build_model`` assigns the tensors to a model made on the meta device, so
the peak should be about one copy of the weights over the baseline of the
imports. ``--naive`` also measures ``safetensors.torch.load_file`` + an
initialised ``GPTModel`` + ``load_state_dict``, the two-copy way.

    python benchmarks/scripts/load_memory.py                      # gpt2-xl, fp32
    python benchmarks/scripts/load_memory.py --size gpt2 --naive  # 124M, both ways
    python benchmarks/scripts/load_memory.py --dtype fp16 --dir /big/disk/xl

The checkpoint is written tensor by tensor (the safetensors format is a JSON
header followed by the raw bytes), so writing it needs little memory either.
Run it on an otherwise idle machine: peak RSS is per process, but a machine
short of memory will swap or kill the loader.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import torch

SIZES = {  # n_embd, n_layer, n_head (Radford et al., 2019, table 2)
    "gpt2": (768, 12, 12),
    "gpt2-medium": (1024, 24, 16),
    "gpt2-large": (1280, 36, 20),
    "gpt2-xl": (1600, 48, 25),
}
DTYPES = {"fp32": (torch.float32, "F32"), "fp16": (torch.float16, "F16")}
VOCAB, POSITIONS = 50257, 1024


def gpt2_tensor_shapes(d: int, n_layer: int) -> dict[str, tuple[int, ...]]:
    """The tensors of openai-community's model.safetensors, in file order."""
    shapes: dict[str, tuple[int, ...]] = {
        "wte.weight": (VOCAB, d),
        "wpe.weight": (POSITIONS, d),
    }
    for i in range(n_layer):
        shapes.update(
            {
                f"h.{i}.ln_1.weight": (d,),
                f"h.{i}.ln_1.bias": (d,),
                f"h.{i}.attn.bias": (1, 1, POSITIONS, POSITIONS),  # mask buffer
                f"h.{i}.attn.c_attn.weight": (d, 3 * d),
                f"h.{i}.attn.c_attn.bias": (3 * d,),
                f"h.{i}.attn.c_proj.weight": (d, d),
                f"h.{i}.attn.c_proj.bias": (d,),
                f"h.{i}.ln_2.weight": (d,),
                f"h.{i}.ln_2.bias": (d,),
                f"h.{i}.mlp.c_fc.weight": (d, 4 * d),
                f"h.{i}.mlp.c_fc.bias": (4 * d,),
                f"h.{i}.mlp.c_proj.weight": (4 * d, d),
                f"h.{i}.mlp.c_proj.bias": (d,),
            }
        )
    shapes["ln_f.weight"] = (d,)
    shapes["ln_f.bias"] = (d,)
    return shapes


def write_checkpoint(out: Path, size: str, dtype_name: str) -> int:
    """A random GPT-2 of ``size`` in ``out`` (config.json + model.safetensors),
    streamed to disk one tensor at a time. Returns the weights file's size."""
    d, n_layer, n_head = SIZES[size]
    dtype, st_dtype = DTYPES[dtype_name]
    itemsize = torch.empty((), dtype=dtype).element_size()
    shapes = gpt2_tensor_shapes(d, n_layer)
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape in shapes.items():
        nbytes = itemsize * int(torch.Size(shape).numel())
        header[name] = {
            "dtype": st_dtype,
            "shape": list(shape),
            "data_offsets": [offset, offset + nbytes],
        }
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the data starts 8-byte aligned
    out.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(0)
    with open(out / "model.safetensors", "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for name, shape in shapes.items():
            if name.endswith("attn.bias") and len(shape) == 4:
                tensor = torch.tril(torch.ones(shape[-2:])).to(dtype)
            else:
                tensor = torch.randn(shape, generator=generator).mul_(0.02).to(dtype)
            f.write(tensor.numpy().tobytes())
            del tensor
    config = {
        "model_type": "gpt2",
        "architectures": ["GPT2LMHeadModel"],
        "n_embd": d,
        "n_layer": n_layer,
        "n_head": n_head,
        "n_positions": POSITIONS,
        "vocab_size": VOCAB,
        "layer_norm_epsilon": 1e-5,
        "activation_function": "gelu_new",
    }
    (out / "config.json").write_text(json.dumps(config, indent=2))
    return (out / "model.safetensors").stat().st_size


def rss_mb(field: str) -> float:
    """VmRSS (now) or VmHWM (peak) of this process, in MB (Linux)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024 / 1e6
    raise RuntimeError(f"no {field} in /proc/self/status")


def measure(directory: str, how: str) -> dict[str, float]:
    """Run in a fresh process: load the checkpoint, report memory and time."""
    import gptkit.core.weights as weights
    from gptkit.core.model import GPTModel

    if how == "naive":
        from safetensors.torch import load_file

        from gptkit.plugins.loaders.hf import read_hf_config

    baseline = rss_mb("VmRSS")
    start = time.perf_counter()
    if how == "gptkit":
        model, _ = weights.model_from_spec(f"hf:{directory}")
    else:  # the two-copy way: a whole state dict plus an initialised model
        from gptkit.formats.hf import TensorSource, state_from_hf

        cfg, _ = read_hf_config(Path(directory) / "config.json")
        tensors = load_file(Path(directory) / "model.safetensors")
        model = GPTModel(cfg)
        source = TensorSource(  # converted as they are popped: no third copy
            list(tensors),
            lambda name: tuple(tensors[name].shape),
            lambda name: nullcontext(tensors.pop(name)),
        )
        model.load_state_dict(state_from_hf(cfg, source), strict=False)
    seconds = time.perf_counter() - start
    params = sum(p.numel() for p in model.parameters())
    return {
        "baseline_rss_mb": baseline,
        "peak_rss_mb": rss_mb("VmHWM"),
        "seconds": seconds,
        "parameters": params,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=SIZES, default="gpt2-xl")
    parser.add_argument("--dtype", choices=DTYPES, default="fp32")
    parser.add_argument("--dir", type=Path, help="Checkpoint directory (reused).")
    parser.add_argument("--naive", action="store_true", help="Also the naive way.")
    parser.add_argument(
        "--measure", choices=["gptkit", "naive"], help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.measure:  # the child process
        print(json.dumps(measure(str(args.dir), args.measure)))
        return

    temporary = args.dir is None
    directory = args.dir or Path(tempfile.mkdtemp(prefix="gptkit-load-memory-"))
    try:
        weights = directory / "model.safetensors"
        if not weights.is_file():
            start = time.perf_counter()
            write_checkpoint(directory, args.size, args.dtype)
            print(f"wrote {weights} in {time.perf_counter() - start:.1f} s")
        file_mb = weights.stat().st_size / 1e6
        print(f"checkpoint: {args.size}, {args.dtype}, {file_mb:,.0f} MB")
        for how in ["gptkit"] + (["naive"] if args.naive else []):
            child = subprocess.run(
                [sys.executable, __file__, "--dir", str(directory), "--measure", how],
                capture_output=True,
                text=True,
                check=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
            r = json.loads(child.stdout.strip().splitlines()[-1])
            extra = r["peak_rss_mb"] - r["baseline_rss_mb"]
            print(
                f"{how:>6}: {r['parameters'] / 1e9:.3f}B parameters in"
                f" {r['seconds']:.1f} s; RSS after imports {r['baseline_rss_mb']:,.0f}"
                f" MB, peak {r['peak_rss_mb']:,.0f} MB: +{extra:,.0f} MB ="
                f" {extra / file_mb:.2f} x the file"
            )
    finally:
        if temporary:
            shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
