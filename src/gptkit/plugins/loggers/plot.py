"""The book's plots (chapter 5, ``plot_losses``), redrawn after every epoch:

- ``plots/loss.png``: training and validation loss over epochs, with a second
  x axis of tokens seen;
- ``plots/perplexity.png``: both perplexities over tokens seen (log scale);
- ``plots/lr.png``: the learning rate at every step (appendix D's figure).

The figures come from :mod:`gptkit.formats.plots`, which ``Run.plot`` uses too.
"""

from __future__ import annotations

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
            from gptkit.formats.runfiles import METRICS, read_rows

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
        from gptkit.formats.plots import figure, save_figure

        kinds = ("loss", "perplexity", "lr") if self._steps else ("loss", "perplexity")
        for kind in kinds:
            fig = figure(kind, self._steps, self._evals, self._steps_per_epoch)
            save_figure(fig, self._dir / f"{kind}.png")
