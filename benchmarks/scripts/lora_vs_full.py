"""LoRA against full finetuning on a model trained here: validation loss at
the same steps, adapter checkpoint size, peak memory.

1. Pretrains a base model with ``gptkit train`` (``--preset``, on the built-in
   ``python-docs`` corpus, no download) for ``--pretrain-steps`` steps.
2. Finetunes it on the book's instruction data twice, in fresh processes, with
   the same data, order, batches and steps: fully (the book's lr 5e-5) and with
   ``--lora`` (appendix E's r=16, alpha=16 and lr by default: the book scales
   the update by ``alpha``, not ``alpha / r``, which is what lets LoRA train at
   the same lr here).
3. Reports both validation-loss curves on one plot (``--plot``), the final
   validation losses and their ratio (LoRA / full), the newest checkpoint's
   size (weights; trainer state with AdamW's moments) and each process's peak
   resident memory, all measured in the same run.

    python benchmarks/scripts/lora_vs_full.py --plot docs/finetuning-lora-vs-full.png

Peak RSS includes the imports and the data; on a machine shared with other
jobs the absolute numbers move, the ratios much less.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lora_memory import DATA, REPO, machine, run, sizes


def gptkit(args: list[str]) -> None:
    import os
    import subprocess

    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run(
        [sys.executable, "-m", "gptkit", *args], env=env, capture_output=True, text=True
    )
    if done.returncode:
        sys.exit(done.stderr)


def evals(run_dir: Path) -> list[dict]:
    rows = [
        json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().split("\n") if x
    ]
    return [r for r in rows if "val_loss" in r]


def plot(curves: dict[str, list[dict]], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for name, rows in curves.items():
        ax.plot([r["step"] for r in rows], [r["val_loss"] for r in rows], label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("validation loss")
    ax.set_title(title, fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="mini")
    parser.add_argument("--context-length", type=int, default=256)
    parser.add_argument("--pretrain-steps", type=int, default=300)
    parser.add_argument("--lora", default="r=16,alpha=16")
    parser.add_argument("--lr", type=float, default=5e-5, help="full finetuning's")
    parser.add_argument("--lora-lr", type=float, default=5e-5)
    parser.add_argument("--steps", type=int, default=116, help="finetuning steps")
    parser.add_argument("--plot", type=Path)
    parser.add_argument("--json", action="store_true")
    opts = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        base = root / "base"
        gptkit([
            "train", "--preset", opts.preset, "--context-length",
            str(opts.context_length), "--corpus", "python-docs", "--max-steps",
            str(opts.pretrain_steps), "--eval-freq", str(opts.pretrain_steps),
            "--start-context", "", "--logger", "jsonl", "--out", str(base),
        ])  # fmt: skip
        steps = [
            json.loads(x) for x in (base / "metrics.jsonl").read_text().splitlines()
        ]
        pretrained = {"train_loss": [r for r in steps if "loss" in r][-1]["loss"]}
        common = [
            "--weights", str(base), "--data", str(DATA), "--max-steps",
            str(opts.steps), "--test-responses", "0", "--start-context", "",
            "--logger", "jsonl",
        ]  # fmt: skip
        rows, curves = {}, {}
        variants = (
            ("full", ["--lr", str(opts.lr)]),
            ("lora", ["--lr", str(opts.lora_lr), "--lora", opts.lora]),
        )
        for name, extra in variants:
            out = root / name
            peak = run([*common, *extra, "--out", str(out)], root / f"{name}.peak")
            weights, state = sizes(out)
            curves[name] = evals(out)
            config = json.loads((out / "config.json").read_text())
            rows[name] = {
                "val_loss": curves[name][-1]["val_loss"],
                "train_loss": curves[name][-1]["train_loss"],
                "checkpoint_weights": weights,
                "trainer_state": state,
                "peak_rss": peak,
                "trainable": (config.get("adapter") or {}).get("trainable_parameters"),
            }
    ratio = {
        k: rows["lora"][k] / rows["full"][k]
        for k in ("val_loss", "checkpoint_weights", "trainer_state", "peak_rss")
    }
    result = {
        "machine": machine(), "preset": opts.preset,
        "context_length": opts.context_length,
        "pretrain_steps": opts.pretrain_steps,
        "pretrained_train_loss": pretrained["train_loss"],
        "steps": opts.steps, "lr_full": opts.lr, "lr_lora": opts.lora_lr,
        "lora": opts.lora, **rows, "lora_over_full": ratio,
        "curves": {k: [(r["step"], r["val_loss"]) for r in v]
                   for k, v in curves.items()},
    }  # fmt: skip
    if opts.plot:
        plot(
            {f"full (lr {opts.lr:g})": curves["full"],
             f"LoRA {opts.lora} (lr {opts.lora_lr:g})": curves["lora"]},
            f"{opts.preset} pretrained {opts.pretrain_steps} steps here, finetuned"
            " on instruction-data.json",
            opts.plot,
        )  # fmt: skip
    if opts.json:
        print(json.dumps(result, indent=2))
        return
    print(result["machine"])
    print(
        f"{opts.preset} (context {opts.context_length}) pretrained"
        f" {opts.pretrain_steps} steps on python-docs (last training loss"
        f" {pretrained['train_loss']:.3f}); finetuned {opts.steps} steps"
    )
    print(
        f"{'':>9} {'val loss':>9} {'weights MB':>11} {'state MB':>9}"
        f" {'peak RSS MB':>12}"
    )
    for name in ("full", "lora"):
        r = rows[name]
        print(
            f"{name:>9} {r['val_loss']:9.3f} {r['checkpoint_weights'] / 1e6:11.2f}"
            f" {r['trainer_state'] / 1e6:9.2f} {r['peak_rss'] / 1e6:12.0f}"
        )
    print(
        f"{'lora/full':>9} {ratio['val_loss']:9.3f} {ratio['checkpoint_weights']:11.3f}"
        f" {ratio['trainer_state']:9.3f} {ratio['peak_rss']:12.3f}"
    )


if __name__ == "__main__":
    main()
