"""Built-in training loggers."""

from __future__ import annotations

from gptkit import hookimpl


@hookimpl
def register_loggers() -> list[str]:
    return [
        "gptkit.plugins.loggers.console:ConsoleLogger",
        "gptkit.formats.runfiles:RunFilesWriter",
        "gptkit.plugins.loggers.plot:PlotLogger",
        "gptkit.plugins.loggers.csv_logger:CsvLogger",
        "gptkit.plugins.loggers.tensorboard_logger:TensorBoardLogger",
    ]
