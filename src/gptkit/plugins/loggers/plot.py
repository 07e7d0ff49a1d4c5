"""The book's plots (chapter 5, ``plot_losses``), redrawn after every epoch:

- ``plots/loss.png``: training and validation loss over epochs, with a second
  x axis of tokens seen;
- ``plots/perplexity.png``: both perplexities over tokens seen (log scale);
- ``plots/lr.png``: the learning rate at every step (appendix D's figure).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from gptkit.core.interfaces import Logger, RunInfo


class PlotLogger(Logger):
    """Draws loss, perplexity and learning-rate curves with matplotlib."""

    name = "plot"
    summary = "plots/loss.png, plots/perplexity.png and plots/lr.png (matplotlib)."

    def start(self, run: RunInfo) -> None:
        self._dir: Path | None = run.run_dir / "plots" if run.run_dir else None
        self._steps_per_epoch = max(1, run.steps_per_epoch)
        self._evals: list[dict[str, Any]] = []
        self._steps: list[dict[str, Any]] = []
        if run.start_step and run.run_dir is not None:
            from gptkit.plugins.loggers.jsonl import METRICS, read_rows

            for row in read_rows(run.run_dir / METRICS):
                if row.get("step", -1) < run.start_step:
                    (self._evals if "val_loss" in row else self._steps).append(row)

    def log_step(self, row: dict[str, Any]) -> None:
        self._steps.append(row)

    def log_eval(self, row: dict[str, Any]) -> None:
        self._evals.append(row)

    def log_sample(self, row: dict[str, Any]) -> None:
        self.draw()

    def finish(self, summary: dict[str, Any]) -> None:
        self.draw()

    def draw(self) -> None:
        """Write the three PNG files (nothing to draw before the first eval)."""
        if self._dir is None or not self._evals:
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        self._dir.mkdir(parents=True, exist_ok=True)
        epochs = [(r["step"] + 1) / self._steps_per_epoch for r in self._evals]
        tokens = [r["tokens_seen"] for r in self._evals]
        train = [r["train_loss"] for r in self._evals]
        val = [r["val_loss"] for r in self._evals]

        fig, ax1 = plt.subplots(figsize=(6, 4))
        ax1.plot(epochs, train, label="Training loss")
        ax1.plot(epochs, val, linestyle="-.", label="Validation loss")
        ax1.set_xlabel("Epochs")
        ax1.set_ylabel("Loss")
        ax1.legend(loc="upper right")
        ax2 = ax1.twiny()  # the same curves against tokens seen, drawn invisibly
        ax2.plot(tokens, train, alpha=0)
        ax2.set_xlabel("Tokens seen")
        fig.tight_layout()
        fig.savefig(self._dir / "loss.png", dpi=120)
        plt.close(fig)

        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(tokens, [_exp(v) for v in train], label="Training perplexity")
        ax.plot(
            tokens,
            [_exp(v) for v in val],
            linestyle="-.",
            label="Validation perplexity",
        )
        ax.set_yscale("log")
        ax.set_xlabel("Tokens seen")
        ax.set_ylabel("Perplexity")
        ax.legend(loc="upper right")
        fig.tight_layout()
        fig.savefig(self._dir / "perplexity.png", dpi=120)
        plt.close(fig)

        if self._steps:
            fig, ax = plt.subplots(figsize=(6, 3))
            ax.plot([r["step"] for r in self._steps], [r["lr"] for r in self._steps])
            ax.set_xlabel("Step")
            ax.set_ylabel("Learning rate")
            fig.tight_layout()
            fig.savefig(self._dir / "lr.png", dpi=120)
            plt.close(fig)


def _exp(x: float) -> float:
    return math.exp(min(x, 700.0))
