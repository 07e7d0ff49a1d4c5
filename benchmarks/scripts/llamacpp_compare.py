"""gptkit's decoding against llama.cpp's on the same GPT-2 124M weights.

The tool people pick for fast CPU decoding is llama.cpp; this script measures
gptkit against it (issue 20): gptkit fp32 / bf16 / int8 / int4 against
llama.cpp f32 / bf16 / q8_0 / q4_0, greedy, batch 1, one prompt, the same
number of new tokens, at each thread count, in alternated rounds.

1. **Weights.** A ``gpt2-124m``-shaped model with seeded random weights (the
   model ``gptkit bench sampling --preset gpt2-124m`` times: tied head,
   query/key/value biases) is saved as a gptkit checkpoint and exported with
   :func:`gptkit.export` (``gptkit export --format hf``); ``n_ctx``, which
   llama.cpp's converter reads, is added to the exported ``config.json``.
   Random weights: the speed of a dense model does not depend on the values
   (no early stop, every step runs the same products); the greedy tokens do
   not mean anything, they only show the two tools compute the same thing.
2. **GGUF.** llama.cpp's own ``convert_hf_to_gguf.py`` (vendored in the
   ``llama-cpp-python`` sdist) writes f32, bf16 and q8_0; q4_0 is
   ``llama_model_quantize`` from the f32 file (``llama-quantize``'s code),
   which keeps the tied output matrix at higher precision (the tensor types
   are read back from the files and recorded).
3. **Timing.** Two worker processes, one per tool, each with all four models
   loaded; the parent alternates them: per round, for every thread count and
   format, the gptkit row, then the llama.cpp row (the order of the two flips
   every round). A run generates ``max_new_tokens`` greedy tokens after the
   prompt; a timestamp is taken when each token id reaches Python — gptkit:
   ``gptkit.bench.runners.trace_gptkit``, the code ``gptkit bench sampling``
   times; llama.cpp: ``llama_decode`` of the prompt, then one
   ``llama_sampler_sample`` (greedy, in C) and one single-token
   ``llama_decode`` per token through llama-cpp-python's low-level API.
   ``decode_tokens_per_s`` = intervals between consecutive tokens / their total
   time (the prefill is excluded, as in ``gptkit bench sampling``); best and
   median over the rounds. One untimed warm-up run (32 tokens) per row first
   (gptkit's ``backend=auto`` measures its kernels then).

    python benchmarks/scripts/llamacpp_compare.py --threads 1,2 --rounds 3

needs ``pip install 'gptkit[llamacpp]'`` (``llama-cpp-python``, built from source:
``CMAKE_ARGS="-DGGML_NATIVE=ON"``, and ``gguf``) and the llama.cpp sources for
the converter (``--llamacpp-src``, or ``$LLAMACPP_SRC``): ``pip download
--no-deps --no-binary :all: llama-cpp-python`` and unpack it. Writes a JSON
result and a markdown table (``--out``, ``.json`` and ``.md``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

#: gptkit format -> (llama.cpp format, how the GGUF is made)
PAIRS: dict[str, tuple[str, str]] = {
    "fp32": ("f32", "convert"),
    "bf16": ("bf16", "convert"),
    "int8": ("q8_0", "convert"),
    "int4": ("q4_0", "quantize"),
}
PRESET = "gpt2-124m"
#: The benchmark suite's prompt (gptkit.bench.runners.PROMPT): 8 GPT-2 tokens.
DEFAULT_PROMPT = [464, 1893, 286, 262, 1110, 318, 257, 649]
#: llama.cpp's file type ids (enum llama_ftype) of the formats quantized here.
LLAMA_FTYPES = {"q4_0": 2, "q8_0": 7}


# -- helpers (no torch, no llama_cpp: tests/test_llamacpp_compare_helpers.py) ----


def add_n_ctx(config_path: Path) -> dict[str, Any]:
    """Give an exported GPT-2 ``config.json`` the ``n_ctx`` key that llama.cpp's
    converter reads (transformers writes only ``n_positions``, its synonym);
    returns the config. A config without ``n_positions`` is refused."""
    config = json.loads(config_path.read_text(encoding="utf-8"))
    if "n_ctx" not in config:
        if "n_positions" not in config:
            raise ValueError(f"{config_path}: neither n_ctx nor n_positions")
        config["n_ctx"] = config["n_positions"]
        config_path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return config


def find_converter(candidates: Iterable[str | Path]) -> Path | None:
    """The first ``convert_hf_to_gguf.py`` found in ``candidates``: a llama.cpp
    checkout, an unpacked ``llama-cpp-python`` sdist (``vendor/llama.cpp``), or
    a directory holding such sdists; None if none has it."""
    for raw in candidates:
        base = Path(raw).expanduser()
        patterns = (
            "convert_hf_to_gguf.py",
            "vendor/llama.cpp/convert_hf_to_gguf.py",
            "*/vendor/llama.cpp/convert_hf_to_gguf.py",
        )
        for pattern in patterns:
            found = sorted(base.glob(pattern))
            if found:
                return found[-1]
    return None


def vendored_commit(converter: Path | None) -> str | None:
    """The llama.cpp commit a ``llama-cpp-python`` sdist vendors: the newest
    ``llama.cpp@HASH`` its CHANGELOG names (the vendored tree has no git
    metadata); None for a plain checkout."""
    import re

    if converter is None:
        return None
    changelog = converter.parent.parent.parent / "CHANGELOG.md"
    if not changelog.is_file():
        return None
    found = re.search(r"llama\.cpp@([0-9a-f]{7,40})", changelog.read_text("utf-8"))
    return found.group(1) if found else None


def decode_rate(ticks: Sequence[float]) -> float | None:
    """Tokens/s between the first and the last token (the prefill excluded):
    intervals / their total time; None with fewer than two tokens."""
    if len(ticks) < 2 or ticks[-1] <= ticks[0]:
        return None
    return (len(ticks) - 1) / (ticks[-1] - ticks[0])


def agreement(a: Sequence[int], b: Sequence[int]) -> dict[str, Any]:
    """How far two greedy continuations agree: the common prefix (tokens until
    the first difference) and the share of equal positions."""
    n = min(len(a), len(b))
    prefix = next((i for i in range(n) if a[i] != b[i]), n)
    same = sum(1 for i in range(n) if a[i] == b[i])
    return {"common_prefix": prefix, "equal_positions": same, "compared": n}


def logit_agreement(a: Sequence[float], b: Sequence[float], k: int = 10) -> dict:
    """How close two logit vectors of the same prompt are: the largest absolute
    difference (also relative to ``b``'s largest magnitude), whether the argmax
    agrees and how many of the top ``k`` tokens both share."""
    if len(a) != len(b) or not a:
        raise ValueError(f"logit vectors of different lengths ({len(a)}, {len(b)})")
    diff = max(abs(x - y) for x, y in zip(a, b, strict=True))
    scale = max(abs(y) for y in b) or 1.0

    def top(v: Sequence[float]) -> list[int]:
        return sorted(range(len(v)), key=lambda i: -v[i])[:k]

    ta, tb = top(a), top(b)
    return {
        "max_abs_diff": diff,
        "max_rel_diff": diff / scale,
        "argmax_equal": ta[0] == tb[0],
        f"top{k}_shared": len(set(ta) & set(tb)),
    }


def summarize_types(types: dict[str, str]) -> dict[str, Any]:
    """tensor name -> GGUF type, summarized: the matrices' types (counts), and
    the output head's (``output.weight``, or the tied ``token_embd.weight``)."""
    counts: dict[str, int] = {}
    for name, kind in types.items():
        if name.endswith(".weight") and "norm" not in name:
            counts[kind] = counts.get(kind, 0) + 1
    head = types.get("output.weight")
    tied = head is None
    if tied:
        head = types.get("token_embd.weight")
    return {"matrices": counts, "head": head, "head_tied": tied}


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """The comparison table: one line per (gptkit format, threads)."""
    lines = [
        "| threads | gptkit | tok/s best | tok/s median | llama.cpp | tok/s best"
        " | tok/s median | gptkit / llama.cpp (best) | (median) | greedy agreement |",
        "|---:|---|---:|---:|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        agree = r.get("agreement") or {}
        agree_text = (
            f"{agree['common_prefix']}/{agree['compared']} common prefix,"
            f" {agree['equal_positions']}/{agree['compared']} equal"
            if agree
            else "-"
        )
        lines.append(
            f"| {r['threads']} | {r['gptkit']} | {_num(r['gptkit_best'])}"
            f" | {_num(r['gptkit_median'])} | {r['llamacpp']}"
            f" | {_num(r['llamacpp_best'])} | {_num(r['llamacpp_median'])}"
            f" | **{_ratio(r['ratio_best'])}** | {_ratio(r['ratio_median'])}"
            f" | {agree_text} |"
        )
    return "\n".join(lines)


def logits_table(checks: dict[str, dict[str, Any]]) -> str:
    """The prompt's last logits per format: gptkit against llama.cpp, and each
    against the reference (gptkit's first format, fp32)."""
    lines = [
        "| format | gptkit vs llama.cpp: max rel. diff | argmax | top-10 shared"
        " | gptkit vs reference | llama.cpp vs reference |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for fmt, c in checks.items():
        both = c["gptkit_vs_llamacpp"]
        lines.append(
            f"| {fmt} | {both['max_rel_diff']:.2%}"
            f" | {'same' if both['argmax_equal'] else 'differs'}"
            f" | {both['top10_shared']}/10"
            f" | {c['gptkit_vs_reference']['max_rel_diff']:.2%}"
            f" | {c['llamacpp_vs_reference']['max_rel_diff']:.2%} |"
        )
    return "\n".join(lines)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}×"


# -- preparing the weights ----------------------------------------------------


def gguf_path(workdir: Path, fmt: str) -> Path:
    return workdir / f"{PRESET}-{fmt}.gguf"


def checkpoint_path(workdir: Path) -> Path:
    return workdir / "checkpoint" / "step-000000"


def gguf_tensor_types(path: Path) -> dict[str, str]:
    """tensor name -> GGUF type name, read with the ``gguf`` package."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    return {t.name: t.tensor_type.name for t in reader.tensors}


def prepare(workdir: Path, converter: Path | None, seed: int, say: Any) -> dict:
    """Make (once) the checkpoint, its HF export and the four GGUF files;
    returns what was made and how."""
    workdir.mkdir(parents=True, exist_ok=True)
    info_path = workdir / "prepared.json"
    ckpt = checkpoint_path(workdir)
    hf_dir = workdir / "hf"
    if not ckpt.exists():
        say(f"saving a random {PRESET} (seed {seed}) to {ckpt} ...")
        from gptkit.bench.runners import bench_model
        from gptkit.core.checkpoints.native import save_checkpoint

        model = bench_model(PRESET, seed=seed)
        save_checkpoint(ckpt.parent, 0, model, model.cfg)
        del model
        shutil.rmtree(hf_dir, ignore_errors=True)
    if not (hf_dir / "config.json").exists():
        import gptkit

        say(f"exporting to {hf_dir} (gptkit export --format hf) ...")
        shutil.rmtree(hf_dir, ignore_errors=True)
        gptkit.export(hf_dir, weights=str(ckpt), format="hf")
    add_n_ctx(hf_dir / "config.json")
    commands: dict[str, str] = {}
    for fmt, (lfmt, how) in PAIRS.items():
        out = gguf_path(workdir, lfmt)
        if how == "convert":
            cmd = [
                sys.executable,
                str(converter) if converter else "convert_hf_to_gguf.py",
                str(hf_dir),
                "--outtype",
                lfmt,
                "--outfile",
                str(out),
            ]
            commands[lfmt] = " ".join(cmd[1:])
            if out.exists():
                continue
            if converter is None:
                raise SystemExit(
                    "llama.cpp's convert_hf_to_gguf.py not found: pass --llamacpp-src"
                    " (an unpacked llama-cpp-python sdist or a llama.cpp checkout)"
                )
            log = workdir / f"convert-{lfmt}.log"
            say(f"converting to {lfmt} ({fmt}), log: {log} ...")
            with open(log, "w", encoding="utf-8") as f:
                subprocess.run(cmd, check=True, stdout=f, stderr=subprocess.STDOUT)
        else:
            source = gguf_path(workdir, "f32")
            commands[lfmt] = (
                f"llama_cpp.llama_model_quantize({source.name}, {out.name},"
                f" ftype={LLAMA_FTYPES[lfmt]} ({lfmt}), defaults otherwise)"
                f" = llama-quantize {source.name} {out.name} {lfmt.upper()}"
            )
            if out.exists():
                continue
            say(f"quantizing f32 -> {lfmt} with llama_model_quantize ...")
            quantize_gguf(source, out, lfmt)
    types = {
        PAIRS[fmt][0]: summarize_types(gguf_tensor_types(gguf_path(workdir, lfmt)))
        for fmt, (lfmt, _) in PAIRS.items()
    }
    info = {
        "preset": PRESET,
        "seed": seed,
        "weights": "random (seeded); speed does not depend on the values",
        "checkpoint": str(ckpt),
        "hf_dir": str(hf_dir),
        "converter": str(converter) if converter else None,
        "llama_cpp_commit": vendored_commit(converter),
        "commands": commands,
        "gguf_types": types,
        "gguf_megabytes": {
            lfmt: round(gguf_path(workdir, lfmt).stat().st_size / 1e6, 1)
            for lfmt, _ in PAIRS.values()
        },
    }
    info_path.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return info


def quantize_gguf(source: Path, out: Path, lfmt: str) -> None:
    """``llama-quantize SOURCE OUT LFMT`` through llama-cpp-python."""
    import ctypes
    import logging

    import llama_cpp

    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = LLAMA_FTYPES[lfmt]
    params.nthread = os.cpu_count() or 1
    rc = llama_cpp.llama_model_quantize(
        str(source).encode(), str(out).encode(), ctypes.byref(params)
    )
    if rc != 0:
        raise SystemExit(f"llama_model_quantize failed ({rc}) for {out}")


# -- workers: one process per tool, JSON lines on stdin/stdout ------------------


def _serve(load: Any, run: Any, logits: Any) -> None:
    """The worker loop: load everything, say ready, then answer requests: a run
    (generate and time), or the prompt's last logits (``{"logits": true}``)."""
    out = sys.stdout
    sys.stdout = sys.stderr  # stray prints must not corrupt the protocol
    info = load()
    out.write(json.dumps({"ready": True, "info": info}) + "\n")
    out.flush()
    for line in sys.stdin:
        request = json.loads(line)
        if request.get("quit"):
            break
        if request.get("logits"):
            reply = {"logits": logits(request["format"], request["prompt"])}
        else:
            reply = run(
                request["format"], request["threads"], request["prompt"], request["n"]
            )
        out.write(json.dumps(reply) + "\n")
        out.flush()


def gptkit_worker(workdir: Path, formats: Sequence[str]) -> None:
    import copy

    import torch

    from gptkit.bench.measure import torch_threads
    from gptkit.bench.runners import trace_gptkit
    from gptkit.core.quantize import quantization_of, quantize_model
    from gptkit.core.registry import get_registry
    from gptkit.formats.models import accelerate_bf16, model_from_spec

    models: dict[str, Any] = {}
    sampler = get_registry().samplers.create("greedy", {})

    def load() -> dict[str, Any]:
        spec = str(checkpoint_path(workdir))
        base, _ = model_from_spec(spec, dtype=torch.float32)
        base.eval()
        described = {}
        for fmt in formats:
            if fmt == "fp32":
                models[fmt] = base
            elif fmt == "bf16":  # what `gptkit generate --dtype bf16` runs
                half, _ = model_from_spec(spec, dtype=torch.bfloat16)
                models[fmt] = accelerate_bf16(half.eval())
            else:  # what `--quantize int8` / `int4` runs (defaults)
                models[fmt] = quantize_model(copy.deepcopy(base), fmt)
            described[fmt] = quantization_of(models[fmt])
        return {"quantization": described}

    def run(fmt: str, threads: int, prompt: list[int], n: int) -> dict[str, Any]:
        with torch_threads(threads):
            trace = trace_gptkit(models[fmt], sampler, prompt, n, 0)
        return {
            "new_ids": trace.new_ids,
            "seconds": trace.seconds,
            "ticks": [t - trace.start for t in trace.ticks],
        }

    def logits(fmt: str, prompt: list[int]) -> list[float]:
        with torch.inference_mode():
            out = models[fmt](torch.tensor([prompt]))
        return out[0, -1].float().tolist()

    _serve(load, run, logits)


def llamacpp_worker(workdir: Path, formats: Sequence[str]) -> None:
    import logging

    import llama_cpp as L

    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
    L.llama_backend_init()
    loaded: dict[str, tuple[Any, Any, Any]] = {}

    def load() -> dict[str, Any]:
        for fmt in formats:
            lfmt = PAIRS[fmt][0]
            mparams = L.llama_model_default_params()
            model = L.llama_model_load_from_file(
                str(gguf_path(workdir, lfmt)).encode(), mparams
            )
            if not model:
                raise SystemExit(f"llama.cpp could not load {gguf_path(workdir, lfmt)}")
            cparams = L.llama_context_default_params()
            cparams.n_ctx = 1024
            cparams.n_batch = 512
            cparams.n_threads = cparams.n_threads_batch = 1
            ctx = L.llama_init_from_model(model, cparams)
            chain = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_greedy())
            loaded[fmt] = (model, ctx, chain)
        return {
            "llama_cpp_python": L.__version__,
            "system_info": L.llama_print_system_info().decode(errors="replace"),
            "context_defaults": "n_ctx 1024, KV cache f16, flash_attn auto (defaults)",
        }

    def run(fmt: str, threads: int, prompt: list[int], n: int) -> dict[str, Any]:
        _, ctx, chain = loaded[fmt]
        L.llama_set_n_threads(ctx, threads, threads)
        L.llama_memory_clear(L.llama_get_memory(ctx), True)
        L.llama_sampler_reset(chain)
        ids = (L.llama_token * len(prompt))(*prompt)
        one = (L.llama_token * 1)()
        new_ids: list[int] = []
        ticks: list[float] = []
        start = time.perf_counter()
        if L.llama_decode(ctx, L.llama_batch_get_one(ids, len(prompt))) != 0:
            raise SystemExit("llama_decode failed on the prompt")
        for i in range(n):
            token = L.llama_sampler_sample(chain, ctx, -1)
            ticks.append(time.perf_counter())
            new_ids.append(int(token))
            if i == n - 1:
                break
            one[0] = token
            if L.llama_decode(ctx, L.llama_batch_get_one(one, 1)) != 0:
                raise SystemExit("llama_decode failed")
        end = time.perf_counter()
        return {
            "new_ids": new_ids,
            "seconds": end - start,
            "ticks": [t - start for t in ticks],
        }

    def logits(fmt: str, prompt: list[int]) -> list[float]:
        model, ctx, _ = loaded[fmt]
        L.llama_memory_clear(L.llama_get_memory(ctx), True)
        ids = (L.llama_token * len(prompt))(*prompt)
        if L.llama_decode(ctx, L.llama_batch_get_one(ids, len(prompt))) != 0:
            raise SystemExit("llama_decode failed on the prompt")
        n_vocab = L.llama_vocab_n_tokens(L.llama_model_get_vocab(model))
        row = L.llama_get_logits_ith(ctx, -1)
        return [float(row[i]) for i in range(n_vocab)]

    _serve(load, run, logits)


class Worker:
    """A worker process of this script and its JSON-lines pipe."""

    def __init__(self, tool: str, workdir: Path, formats: Sequence[str]) -> None:
        cmd = [
            sys.executable,
            __file__,
            "--worker",
            tool,
            "--workdir",
            str(workdir),
            "--formats",
            ",".join(formats),
        ]
        self.tool = tool
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        self.info = self._read()["info"]

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"the {self.tool} worker exited ({self.proc.wait()})")
        return json.loads(line)

    def run(self, fmt: str, threads: int, prompt: list[int], n: int) -> dict[str, Any]:
        return self.ask({"format": fmt, "threads": threads, "prompt": prompt, "n": n})

    def logits(self, fmt: str, prompt: list[int]) -> list[float]:
        return self.ask({"logits": True, "format": fmt, "prompt": prompt})["logits"]

    def ask(self, request: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            assert self.proc.stdin is not None
            self.proc.stdin.write(json.dumps({"quit": True}) + "\n")
            self.proc.stdin.close()
        self.proc.wait(timeout=60)


# -- the comparison -----------------------------------------------------------


def _load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _cpu_flags() -> list[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return line.split(":", 1)[1].split()
    except OSError:
        pass
    return []


def compare(args: argparse.Namespace, say: Any) -> dict[str, Any]:
    from gptkit.bench.measure import machine_info

    workdir = Path(args.workdir)
    converter = find_converter(
        [p for p in (args.llamacpp_src, os.environ.get("LLAMACPP_SRC")) if p]
    )
    prepared = prepare(workdir, converter, args.seed, say)
    formats = args.formats
    prompt = list(args.prompt_ids)
    say("starting the workers (loading every model) ...")
    workers = {
        "gptkit": Worker("gptkit", workdir, formats),
        "llamacpp": Worker("llamacpp", workdir, formats),
    }
    runs: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    loads: list[dict[str, Any]] = []
    started = time.time()
    try:
        for threads in args.threads:  # warm-up: kernels chosen, pages mapped
            for fmt in formats:
                for tool in ("gptkit", "llamacpp"):
                    say(f"warm-up {tool} {fmt} @{threads}t")
                    workers[tool].run(fmt, threads, prompt, args.warmup_tokens)
        say("comparing the prompt's logits ...")
        ref = workers["gptkit"].logits(formats[0], prompt)
        ref_name = f"gptkit {formats[0]}"
        logit_checks = {}
        for fmt in formats:
            mine = workers["gptkit"].logits(fmt, prompt)
            theirs = workers["llamacpp"].logits(fmt, prompt)
            logit_checks[fmt] = {
                "reference": ref_name,
                "gptkit_vs_llamacpp": logit_agreement(mine, theirs),
                "gptkit_vs_reference": logit_agreement(mine, ref),
                "llamacpp_vs_reference": logit_agreement(theirs, ref),
            }
        for r in range(args.rounds):
            loads.append({"round": r, "before": _load_average()})
            order = ("gptkit", "llamacpp") if r % 2 == 0 else ("llamacpp", "gptkit")
            for threads in args.threads:
                for fmt in formats:
                    for tool in order:
                        reply = workers[tool].run(
                            fmt, threads, prompt, args.max_new_tokens
                        )
                        reply["decode_tokens_per_s"] = decode_rate(reply["ticks"])
                        reply["tokens_per_s"] = len(reply["new_ids"]) / reply["seconds"]
                        runs.setdefault((tool, fmt, threads), []).append(reply)
                        say(
                            f"round {r + 1}/{args.rounds} {tool:8} {fmt} @{threads}t:"
                            f" {reply['decode_tokens_per_s']:.1f} tok/s"
                        )
            loads[-1]["after"] = _load_average()
    finally:
        for worker in workers.values():
            worker.close()
    rows = []
    for threads in args.threads:
        for fmt in formats:
            g = runs[("gptkit", fmt, threads)]
            ll = runs[("llamacpp", fmt, threads)]
            g_rates = [x["decode_tokens_per_s"] for x in g]
            l_rates = [x["decode_tokens_per_s"] for x in ll]
            reference = runs.get(("gptkit", "fp32", threads))
            rows.append(
                {
                    "threads": threads,
                    "gptkit": fmt,
                    "llamacpp": PAIRS[fmt][0],
                    "gptkit_best": max(g_rates),
                    "gptkit_median": statistics.median(g_rates),
                    "llamacpp_best": max(l_rates),
                    "llamacpp_median": statistics.median(l_rates),
                    "ratio_best": max(g_rates) / max(l_rates),
                    "ratio_median": statistics.median(g_rates)
                    / statistics.median(l_rates),
                    "gptkit_rates": g_rates,
                    "llamacpp_rates": l_rates,
                    "gptkit_tokens_per_s_with_prefill": [x["tokens_per_s"] for x in g],
                    "llamacpp_tokens_per_s_with_prefill": [
                        x["tokens_per_s"] for x in ll
                    ],
                    "agreement": agreement(g[0]["new_ids"], ll[0]["new_ids"]),
                    "agreement_with_gptkit_fp32": agreement(
                        g[0]["new_ids"], reference[0]["new_ids"]
                    )
                    if reference
                    else None,
                    "gptkit_tokens": g[0]["new_ids"],
                    "llamacpp_tokens": ll[0]["new_ids"],
                }
            )
    machine = machine_info("cpu")
    interesting = (
        "avx2",
        "fma",
        "f16c",
        "avx512f",
        "avx512bw",
        "avx512dq",
        "avx512vl",
        "avx512_vnni",
        "avx512_bf16",
        "avx_vnni",
        "amx_tile",
        "amx_int8",
        "amx_bf16",
    )
    flags = set(_cpu_flags())
    return {
        "kind": "gptkit-llamacpp-compare",
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "seconds": round(time.time() - started, 1),
        "machine": machine,
        "cpu_flags": [f for f in interesting if f in flags],
        "load_average": loads,
        "prompt_ids": prompt,
        "max_new_tokens": args.max_new_tokens,
        "warmup_tokens": args.warmup_tokens,
        "rounds": args.rounds,
        "threads": args.threads,
        "prepared": prepared,
        "gptkit_worker": workers["gptkit"].info,
        "llamacpp_worker": workers["llamacpp"].info,
        "rows": rows,
        "logits": logit_checks,
    }


def render_markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    loads = result["load_average"]
    load_text = ", ".join(
        f"round {x['round'] + 1}: {x['before'][0] if x['before'] else '?'}"
        f" → {x.get('after', [None])[0] if x.get('after') else '?'}"
        for x in loads
    )
    types = result["prepared"]["gguf_types"]
    heads = ", ".join(f"{k}: head {v['head']}" for k, v in types.items())
    quant = result["gptkit_worker"]["quantization"]
    reference = next(iter(result["logits"].values()))["reference"]
    return "\n".join(
        [
            f"# gptkit vs llama.cpp, {PRESET} decoding ({result['date']})",
            "",
            f"- CPU: {m['cpu']}, {m['usable_cores']} usable cores;"
            f" flags: {' '.join(result['cpu_flags'])}",
            f"- torch {m['torch']}, gptkit {m['gptkit']} (commit"
            f" {m['gptkit_commit']}), llama-cpp-python"
            f" {result['llamacpp_worker']['llama_cpp_python']} (llama.cpp"
            f" {result['prepared'].get('llama_cpp_commit')})",
            f"- llama.cpp system info: `{result['llamacpp_worker']['system_info']}`",
            f"- load average (1 min): {load_text}",
            f"- prompt: {len(result['prompt_ids'])} tokens, greedy, batch 1,"
            f" {result['max_new_tokens']} new tokens; best and median decode"
            f" tokens/s (prefill excluded) of {result['rounds']} alternated rounds",
            f"- weights: {PRESET}-shaped, random (seed {result['prepared']['seed']});"
            " the speed does not depend on the values",
            f"- GGUF tensor types: {heads}",
            f"- gptkit quantization: {json.dumps(quant)}",
            "",
            markdown_table(result["rows"]),
            "",
            "The prompt's last logits (max. difference relative to the largest"
            f" logit; reference: {reference}):",
            "",
            logits_table(result["logits"]),
            "",
        ]
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default="/tmp/gptkit-llamacpp-compare")
    parser.add_argument("--llamacpp-src", default=None)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=200)
    parser.add_argument(
        "--warmup-tokens",
        type=int,
        default=32,
        help="tokens of the untimed warm-up run of each row",
    )
    parser.add_argument("--formats", default=",".join(PAIRS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--prompt-ids", default=",".join(map(str, DEFAULT_PROMPT)), help="token ids"
    )
    parser.add_argument(
        "--out",
        default="benchmarks/results/llamacpp-compare",
        help="writes OUT.json and OUT.md",
    )
    parser.add_argument("--prepare-only", action="store_true")
    parser.add_argument(
        "--worker", choices=("gptkit", "llamacpp"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    args.formats = [f for f in args.formats.split(",") if f]
    unknown = [f for f in args.formats if f not in PAIRS]
    if unknown:
        parser.error(f"unknown format {unknown[0]!r} (choose from {', '.join(PAIRS)})")
    if args.worker == "gptkit":
        return gptkit_worker(Path(args.workdir), args.formats)
    if args.worker == "llamacpp":
        return llamacpp_worker(Path(args.workdir), args.formats)
    args.threads = [int(t) for t in args.threads.split(",") if t]
    args.prompt_ids = [int(t) for t in args.prompt_ids.split(",") if t]

    def say(text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)

    if args.prepare_only:
        converter = find_converter(
            [p for p in (args.llamacpp_src, os.environ.get("LLAMACPP_SRC")) if p]
        )
        info = prepare(Path(args.workdir), converter, args.seed, say)
        print(json.dumps(info, indent=2))
        return None
    result = compare(args, say)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    text = render_markdown(result)
    out.with_suffix(".md").write_text(text)
    print(text)
    return None


if __name__ == "__main__":
    main()
