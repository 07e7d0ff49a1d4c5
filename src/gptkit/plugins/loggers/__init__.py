"""Built-in training loggers."""

from __future__ import annotations

from gptkit import hookimpl
from gptkit.core.interfaces import Component


@hookimpl
def register_loggers() -> list[Component]:
    return [
        Component(
            "console",
            "gptkit.plugins.loggers.console:ConsoleLogger",
            "The book's progress lines, per-epoch samples and a progress bar.",
        ),
        Component(
            "jsonl",
            "gptkit.plugins.loggers.jsonl:JsonlLogger",
            "metrics.jsonl (every step and evaluation) and samples.jsonl.",
        ),
        Component(
            "plot",
            "gptkit.plugins.loggers.plot:PlotLogger",
            "plots/loss.png, plots/perplexity.png and plots/lr.png (matplotlib).",
        ),
        Component(
            "csv",
            "gptkit.plugins.loggers.csv_logger:CsvLogger",
            "metrics.csv: one row per step (or per evaluation) with the losses.",
        ),
        Component(
            "tensorboard",
            "gptkit.plugins.loggers.tensorboard_logger:TensorBoardLogger",
            "TensorBoard event files in RUN_DIR/tensorboard (gptkit[tensorboard]).",
        ),
    ]
