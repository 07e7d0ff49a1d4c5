"""TensorBoard event files in ``RUN_DIR/tensorboard`` (``tensorboard --logdir runs``).

Scalars: ``train/loss`` (the batch loss) and ``train/lr`` every step;
``loss/train``, ``loss/val``, ``perplexity/train`` and ``perplexity/val`` at
every evaluation; the x axis is the optimizer step. Samples are text entries,
the run's config a text entry at step 0. On resume the writer purges events at
or past the resumed step (``SummaryWriter(purge_step=...)``), so the curves do
not fold back on themselves.

Needs the ``tensorboard`` package: ``pip install 'gptkit[tensorboard]'``.
"""

from __future__ import annotations

import importlib.util
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gptkit.core.interfaces import Logger, RunInfo
from gptkit.errors import GptkitError
from gptkit.system.storage import guarded

INSTALL_HINT = (
    "the tensorboard logger needs the tensorboard package;"
    " install it with: pip install 'gptkit[tensorboard]'"
)


def require_tensorboard() -> None:
    """Raise a one-line :class:`GptkitError` when tensorboard is not installed."""
    if importlib.util.find_spec("tensorboard") is None:
        raise GptkitError(INSTALL_HINT)


class TensorBoardLogger(Logger):
    """Writes losses, perplexities, learning rates and samples for TensorBoard."""

    name = "tensorboard"
    summary = "TensorBoard event files in RUN_DIR/tensorboard (gptkit[tensorboard])."

    @dataclass(frozen=True)
    class Options:
        subdir: str = field(
            default="tensorboard",
            metadata={"help": "directory of the event files, inside the run"},
        )

    def __init__(self, options: Any = None, **kwargs: Any) -> None:
        super().__init__(options, **kwargs)
        require_tensorboard()  # fail before training starts, not after

    def start(self, run: RunInfo) -> None:
        self._writer: Any = None
        if run.run_dir is None:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            raise GptkitError(f"{INSTALL_HINT} ({exc})") from None
        log_dir = run.run_dir / self.options.subdir
        with guarded(log_dir):
            self._writer = SummaryWriter(
                log_dir=str(log_dir), purge_step=run.start_step or None
            )
        if not run.start_step:
            config = json.dumps(run.config, indent=2, default=str)
            # Four leading spaces: TensorBoard renders text as Markdown.
            self._writer.add_text(
                "config", "\n".join("    " + line for line in config.splitlines()), 0
            )

    def log_step(self, row: dict[str, Any]) -> None:
        if self._writer is not None:
            self._writer.add_scalar("train/loss", row["loss"], row["step"])
            self._writer.add_scalar("train/lr", row["lr"], row["step"])

    def log_eval(self, row: dict[str, Any]) -> None:
        if self._writer is None:
            return
        step = row["step"]
        for split in ("train", "val"):
            loss = row[f"{split}_loss"]
            self._writer.add_scalar(f"loss/{split}", loss, step)
            self._writer.add_scalar(
                f"perplexity/{split}", math.exp(min(loss, 700.0)), step
            )

    def log_sample(self, row: dict[str, Any]) -> None:
        if self._writer is not None:
            self._writer.add_text("sample", row["text"], row["step"])

    def finish(self, summary: dict[str, Any]) -> None:
        if self._writer is not None:
            writer, self._writer = self._writer, None
            with guarded(Path(writer.log_dir)):
                writer.flush()
                writer.close()
