"""Training and validation loss of runs side by side, one panel per model, one
colour per ``--precision`` (README's precision figure).

    python benchmarks/scripts/precision_curves.py runs/ch5-fp32 runs/tiny-fp32 \\
        runs/tiny-bf16-mixed runs/tiny-bf16-true --out docs/precision-loss.png

Each argument is a ``gptkit train`` run directory; its ``config.json`` says
the model and precision, its ``metrics.jsonl`` the evaluations.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

COLOURS = {
    "fp32": "tab:blue",
    "bf16-mixed": "tab:orange",
    "bf16-true": "tab:green",
    "fp16-mixed": "tab:red",
}


def load(run: Path) -> tuple[str, str, list[dict]]:
    config = json.loads((run / "config.json").read_text(encoding="utf-8"))
    rows = [
        json.loads(line)
        for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    evals = [r for r in rows if "val_loss" in r]
    return config["preset"], config.get("precision", "fp32"), evals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--title", default="")
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels: dict[str, list[tuple[str, list[dict]]]] = {}
    for run in args.runs:
        preset, precision, evals = load(run)
        panels.setdefault(preset, []).append((precision, evals))
    fig, axes = plt.subplots(
        1, len(panels), figsize=(6 * len(panels), 4.2), squeeze=False
    )
    for ax, (preset, curves) in zip(axes[0], panels.items(), strict=True):
        for precision, evals in curves:
            tokens = [r["tokens_seen"] for r in evals]
            colour = COLOURS.get(precision)
            ax.plot(tokens, [r["train_loss"] for r in evals], color=colour,
                    label=f"{precision} train")  # fmt: skip
            ax.plot(tokens, [r["val_loss"] for r in evals], color=colour,
                    linestyle="--", label=f"{precision} val")  # fmt: skip
        ax.set_title(preset)
        ax.set_xlabel("tokens seen")
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if args.title:
        fig.suptitle(args.title)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=100)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
