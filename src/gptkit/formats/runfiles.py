"""``metrics.jsonl`` and ``samples.jsonl``: a run directory's record, read by
``Run.metrics`` and by other tools (pandas reads them with ``lines=True``).

One JSON object per line: step rows ``{"step", "epoch", "tokens_seen", "lr",
"loss"}``, evaluation rows ``{"step", "epoch", "tokens_seen", "train_loss",
"val_loss"}`` and sample rows. On resume, rows past the checkpoint are dropped
so the file reads as if the run had never stopped.

Every training run with a directory writes them (:mod:`gptkit.runs.compose`
attaches :class:`RunFilesWriter` whatever loggers are chosen); the writer is also
listed as the ``jsonl`` logger, so ``--logger jsonl`` alone gives a quiet run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gptkit.core.interfaces import Logger, RunInfo
from gptkit.system.storage import AppendFile, atomic_write

METRICS = "metrics.jsonl"
SAMPLES = "samples.jsonl"


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a JSON-lines file (a torn last line is ignored)."""
    rows = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return rows


def truncate_rows(path: Path, keep_before_step: int) -> None:
    """Keep rows whose ``step`` is below ``keep_before_step`` (atomically)."""
    rows = [r for r in read_rows(path) if r.get("step", -1) < keep_before_step]
    atomic_write(path, "".join(json.dumps(r) + "\n" for r in rows))


class RunFilesWriter(Logger):
    """Writes every step, evaluation and sample of a run as JSON lines."""

    name = "jsonl"
    summary = (
        "metrics.jsonl and samples.jsonl in the run directory (always written;"
        " alone, a quiet run)."
    )

    def start(self, run: RunInfo) -> None:
        self._files: dict[str, AppendFile] = {}
        if run.run_dir is None:
            return
        for name in (METRICS, SAMPLES):
            path = run.run_dir / name
            if run.start_step:
                truncate_rows(path, run.start_step)
            self._files[name] = AppendFile(path, append=bool(run.start_step))

    def _write(self, name: str, row: dict[str, Any]) -> None:
        f = self._files.get(name)
        if f is not None:
            f.write(json.dumps(row) + "\n")  # flushed; errors name the file

    def log_step(self, row: dict[str, Any]) -> None:
        self._write(METRICS, row)

    def log_eval(self, row: dict[str, Any]) -> None:
        self._write(METRICS, row)

    def log_sample(self, row: dict[str, Any]) -> None:
        self._write(SAMPLES, row)

    def finish(self, summary: dict[str, Any]) -> None:
        for f in self._files.values():
            f.close()
        self._files = {}
