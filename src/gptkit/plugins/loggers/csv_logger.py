"""``metrics.csv`` in the run directory: a table for spreadsheets and pandas.

Columns ``step, epoch, tokens_seen, lr, loss, train_loss, val_loss``. With the
default ``rows=steps`` there is one row per optimizer step (``loss`` is that
step's batch loss) and the evaluation losses fill ``train_loss`` and
``val_loss`` on the row of the step they were measured after (empty
elsewhere); ``rows=evals`` keeps only the rows with an evaluation. On resume,
rows from the resumed step on are dropped, so the file reads as if the run had
never stopped (like ``metrics.jsonl``).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gptkit.core.interfaces import Logger, RunInfo
from gptkit.system.storage import AppendFile, atomic_open

METRICS_CSV = "metrics.csv"
COLUMNS = ("step", "epoch", "tokens_seen", "lr", "loss", "train_loss", "val_loss")


def read_csv_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a metrics CSV as dicts of strings (a torn last line is dropped)."""
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [r for r in rows if None not in r.values() and None not in r]


def _step_of(row: dict[str, str]) -> int:
    try:
        return int(row.get("step") or -1)
    except ValueError:
        return -1


class CsvLogger(Logger):
    """Writes ``metrics.csv``: one row per step, evaluation losses on their step."""

    name = "csv"
    summary = "metrics.csv: one row per step (or per evaluation) with the losses."

    @dataclass(frozen=True)
    class Options:
        rows: str = field(
            default="steps",
            metadata={
                "help": "steps: a row per optimizer step; evals: only evaluations",
                "choices": ("steps", "evals"),
            },
        )

    def start(self, run: RunInfo) -> None:
        self._file: AppendFile | None = None
        self._pending: dict[str, Any] | None = None
        if run.run_dir is None:
            return
        path = run.run_dir / METRICS_CSV
        if run.start_step and path.is_file():
            kept = [r for r in read_csv_rows(path) if _step_of(r) < run.start_step]
            with atomic_open(path, "w", newline="") as f:
                writer = csv.DictWriter(f, COLUMNS, extrasaction="ignore")
                writer.writeheader()
                writer.writerows(kept)
            self._file = AppendFile(path, append=True, newline="")
        else:
            self._file = AppendFile(path, append=False, newline="")
            csv.writer(self._file).writerow(COLUMNS)
        self._writer = csv.DictWriter(self._file, COLUMNS, extrasaction="ignore")

    def _flush(self) -> None:
        """Write the pending step row (an evaluation may still join it)."""
        row, self._pending = self._pending, None
        if row is None or self._file is None:
            return
        if self.options.rows == "evals" and "val_loss" not in row:
            return
        self._writer.writerow(row)  # flushed; errors name the file

    def log_step(self, row: dict[str, Any]) -> None:
        self._flush()
        self._pending = dict(row)

    def log_eval(self, row: dict[str, Any]) -> None:
        # The trainer evaluates right after the step it is logged with.
        if self._pending is None or self._pending.get("step") != row.get("step"):
            self._flush()
            self._pending = {}
        self._pending.update(row)
        self._flush()

    def finish(self, summary: dict[str, Any]) -> None:
        self._flush()
        if self._file is not None:
            self._file.close()
            self._file = None
