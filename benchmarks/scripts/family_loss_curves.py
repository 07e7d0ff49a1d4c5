"""Training and validation loss of one from-scratch run per model family on
the same budget, in one chart (the figure of docs/model-families.md).

    python benchmarks/scripts/family_loss_curves.py runs/gpt2-tiny \\
        runs/llama-tiny runs/qwen3-tiny --out docs/model-families-loss.png

Each argument is a ``gptkit train`` run directory: its ``config.json`` says
the family and preset (and the parameters, counted from the model's shape),
its ``metrics.jsonl`` the evaluations. ``--summary FILE`` also writes each
run's evaluations and final losses as JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

COLOURS = {"gpt2": "tab:blue", "llama": "tab:orange", "qwen3": "tab:green"}


def load(run: Path) -> dict:
    config = json.loads((run / "config.json").read_text(encoding="utf-8"))
    rows = [
        json.loads(line)
        for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    evals = [r for r in rows if "val_loss" in r]
    if not evals:
        raise SystemExit(f"{run}: no evaluations in metrics.jsonl")
    model = config["model"]
    return {
        "run": str(run),
        "family": model.get("arch", "gpt2"),
        "preset": config["preset"],
        "parameters": parameters(model),
        "evals": [
            {k: r[k] for k in ("step", "tokens_seen", "train_loss", "val_loss")}
            for r in evals
        ],
        "final": {k: evals[-1][k] for k in ("step", "train_loss", "val_loss")},
    }


def parameters(model: dict) -> int | None:
    """The parameter count of the run's model config (None if not computable)."""
    try:
        from gptkit.core.config import model_config_from_dict

        return model_config_from_dict(model).num_parameters()
    except Exception:  # an older or foreign config: the chart does without it
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--summary", type=Path)
    parser.add_argument("--title", default="")
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [load(run) for run in args.runs]
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for r in runs:
        tokens = [e["tokens_seen"] for e in r["evals"]]
        colour = COLOURS.get(r["family"])
        size = f", {r['parameters'] / 1e6:.1f}M" if r["parameters"] else ""
        label = f"{r['family']} ({r['preset']}{size})"
        ax.plot(tokens, [e["train_loss"] for e in r["evals"]], color=colour,
                label=f"{label} train")  # fmt: skip
        ax.plot(tokens, [e["val_loss"] for e in r["evals"]], color=colour,
                linestyle="--", label=f"{label} val")  # fmt: skip
    ax.set_xlabel("tokens seen")
    ax.set_ylabel("cross-entropy loss (nats)")
    ax.set_title(args.title or "From scratch on the-verdict, same budget")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    for r in runs:
        f = r["final"]
        print(
            f"{r['family']:6} {r['preset']:11} step {f['step']}: train"
            f" {f['train_loss']:.3f}, val {f['val_loss']:.3f}"
        )
    if args.summary:
        args.summary.write_text(json.dumps(runs, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
