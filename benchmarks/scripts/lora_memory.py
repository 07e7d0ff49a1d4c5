"""LoRA against full finetuning: checkpoint size and peak memory.

Saves a random model of ``--preset`` as the book saves one (``model.pth``),
then runs ``gptkit finetune`` twice in fresh processes on the same records and
steps — full finetuning and ``--lora`` — and reports, for each, the size of the
newest checkpoint (weights, and the trainer state holding AdamW's moments) and
the process's peak resident memory, with the LoRA / full ratios measured in
the same run.

    python benchmarks/scripts/lora_memory.py                        # gpt2-124m
    python benchmarks/scripts/lora_memory.py --preset small --lora r=8,alpha=16

Peak RSS includes the imports and the data; on a machine shared with other
jobs the absolute numbers move, the ratios much less.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "data" / "instruction-data.json"


def machine() -> str:
    import torch

    model = flags = "?"
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("model name") and model == "?":
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags") and flags == "?":
                wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "fma")
                flags = " ".join(f for f in line.split() if f in wanted)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        cwd=REPO,
    ).stdout.strip()
    return (
        f"{model} ({flags}), {torch.get_num_threads()} threads, torch"
        f" {torch.__version__}, Python {platform.python_version()}, commit {commit}"
    )


#: Runs ``gptkit ARGS`` and writes the process's own peak RSS (KiB) at exit.
WRAPPER = (
    "import atexit, resource, sys; path = sys.argv[1];"
    " atexit.register(lambda: open(path, 'w').write("
    "str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)));"
    " sys.argv = ['gptkit', *sys.argv[2:]];"
    " from gptkit.cli.main import cli; cli()"
)


def run(args: list[str], peak_file: Path) -> int:
    """Peak RSS (bytes) of ``gptkit finetune ARGS`` in a fresh process."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run(
        [sys.executable, "-c", WRAPPER, str(peak_file), "finetune", *args],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    if done.returncode:
        sys.exit(done.stderr)
    return int(peak_file.read_text()) * 1024  # ru_maxrss is in KiB on Linux


def sizes(run_dir: Path) -> tuple[int, int]:
    [ckpt] = sorted((run_dir / "checkpoints").iterdir())[-1:]
    return (ckpt / "model.safetensors").stat().st_size, (
        ckpt / "trainer_state.pt"
    ).stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="gpt2-124m")
    parser.add_argument("--lora", default="r=16,alpha=16")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--records", type=int, default=200)
    parser.add_argument("--json", action="store_true")
    opts = parser.parse_args()
    import torch

    from gptkit.core.config import get_preset
    from gptkit.core.model import GPTModel

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cfg = get_preset(opts.preset)
        torch.manual_seed(123)
        torch.save(GPTModel(cfg).state_dict(), root / "model.pth")
        data = root / "data.json"
        data.write_text(json.dumps(json.loads(DATA.read_text())[: opts.records]))
        common = [
            "--weights", f"book:{root / 'model.pth'}", "--n-heads", str(cfg.n_heads),
            "--data", str(data), "--max-steps", str(opts.steps), "--test-responses",
            "0", "--logger", "jsonl",
        ]  # fmt: skip
        rows = {}
        for name, extra in (("full", []), ("lora", ["--lora", opts.lora])):
            out = root / name
            peak = run([*common, *extra, "--out", str(out)], root / f"{name}.peak")
            weights, state = sizes(out)
            rows[name] = {"checkpoint_weights": weights, "trainer_state": state,
                          "peak_rss": peak}  # fmt: skip
    ratio = {k: rows["lora"][k] / rows["full"][k] for k in rows["full"]}
    result = {"machine": machine(), "preset": opts.preset, "lora": opts.lora,
              "steps": opts.steps, **rows, "lora_over_full": ratio}  # fmt: skip
    if opts.json:
        print(json.dumps(result, indent=2))
        return
    print(result["machine"])
    print(f"{opts.preset}, {opts.steps} steps, --lora {opts.lora}")
    print(f"{'':>8} {'weights MB':>11} {'state MB':>9} {'peak RSS MB':>12}")
    for name in ("full", "lora"):
        r = rows[name]
        print(
            f"{name:>8} {r['checkpoint_weights'] / 1e6:11.1f}"
            f" {r['trainer_state'] / 1e6:9.1f} {r['peak_rss'] / 1e6:12.0f}"
        )
    print(
        f"{'lora/full':>8} {ratio['checkpoint_weights']:11.3f}"
        f" {ratio['trainer_state']:9.3f} {ratio['peak_rss']:12.3f}"
    )


if __name__ == "__main__":
    main()
