"""A Markdown report of a training run: ``report.md`` in the run directory.

The report holds what the run is (model, corpus, steps), a table of every
evaluation (losses and validation perplexity) and the per-epoch samples. It is
rewritten (atomically) after every evaluation and sample, so it is readable
while the run goes on. On ``--resume`` the rows of the interrupted run from the
resumed step on are dropped, as gptkit's ``jsonl`` logger does, so the report
reads as if the run had never stopped.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gptkit.core.interfaces import Logger, RunInfo

EVAL_HEADER = (
    "| step | epoch | tokens seen | train loss | val loss | val perplexity |\n"
    "| ---: | ---: | ---: | ---: | ---: | ---: |\n"
)
_SAMPLE_HEADING = re.compile(r"^### Epoch (\d+), step (\d+)$")


def _perplexity(loss: float) -> float:
    return math.exp(min(loss, 700.0))


def _fence(text: str) -> str:
    """A backtick fence longer than any run of backticks in ``text``."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def parse_report(text: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The evaluation rows and sample rows of a report written by this logger."""
    evals: list[dict[str, Any]] = []
    samples: list[dict[str, Any]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 6 and cells[0].isdigit():
            evals.append(
                {
                    "step": int(cells[0]),
                    "epoch": int(cells[1]),
                    "tokens_seen": int(cells[2].replace(",", "")),
                    "train_loss": float(cells[3]),
                    "val_loss": float(cells[4]),
                }
            )
        match = _SAMPLE_HEADING.match(line)
        if match and i + 1 < len(lines) and lines[i + 1].startswith("```"):
            fence = lines[i + 1].removesuffix("text")
            end = i + 2
            while end < len(lines) and lines[end] != fence:
                end += 1
            samples.append(
                {
                    "epoch": int(match.group(1)),
                    "step": int(match.group(2)),
                    "text": "\n".join(lines[i + 2 : end]),
                }
            )
            i = end
        i += 1
    return evals, samples


class MarkdownReport(Logger):
    """Writes ``report.md``: the run, its evaluations and its samples."""

    name = "markdown"
    summary = "report.md: the run, a table of every evaluation and the samples."

    @dataclass(frozen=True)
    class Options:
        filename: str = field(
            default="report.md", metadata={"help": "file name in the run directory"}
        )
        title: str = field(
            default="Training report", metadata={"help": "the report's heading"}
        )

    def start(self, run: RunInfo) -> None:
        self._run = run
        self._evals: list[dict[str, Any]] = []
        self._samples: list[dict[str, Any]] = []
        self._summary: dict[str, Any] | None = None
        self._path: Path | None = None
        if run.run_dir is None:
            return
        self._path = run.run_dir / self.options.filename
        if run.start_step and self._path.is_file():
            evals, samples = parse_report(self._path.read_text(encoding="utf-8"))
            self._evals = [r for r in evals if r["step"] < run.start_step]
            self._samples = [r for r in samples if r["step"] < run.start_step]
        self.write()

    def log_eval(self, row: dict[str, Any]) -> None:
        self._evals.append(row)
        self.write()

    def log_sample(self, row: dict[str, Any]) -> None:
        self._samples.append(row)
        self.write()

    def finish(self, summary: dict[str, Any]) -> None:
        self._summary = summary
        self.write()

    def render(self) -> str:
        """The report as Markdown."""
        run, cfg = self._run, self._run.config
        model, data = cfg.get("model", {}), cfg.get("data", {})
        lines = [f"# {self.options.title}", ""]
        if model:
            lines.append(
                f"- model: {cfg.get('preset', 'custom')} ({model.get('n_layers')}"
                f" layers, {model.get('emb_dim')} wide, {model.get('n_heads')} heads,"
                f" context {model.get('context_length')}),"
                f" {run.num_parameters:,} parameters"
            )
        if data:
            lines.append(
                f"- corpus: {', '.join(data.get('corpus', []))}"
                f" ({data.get('characters', 0):,} characters,"
                f" {data.get('tokens', 0):,} tokens)"
            )
        lines.append(
            f"- training: {run.total_steps:,} steps, {run.steps_per_epoch:,} per"
            f" epoch; {run.train_tokens:,} training and {run.val_tokens:,}"
            " validation tokens"
        )
        if self._summary is None:
            lines.append("- status: running")
        else:
            s = self._summary
            lines.append(
                f"- status: {s.get('status')} after {s.get('steps', 0):,} steps,"
                f" {s.get('tokens_seen', 0):,} tokens seen,"
                f" {s.get('seconds', 0.0):.1f} s"
            )
        lines += ["", "## Evaluations", ""]
        if self._evals:
            lines.append(EVAL_HEADER.rstrip("\n"))
            for r in self._evals:
                lines.append(
                    f"| {r['step']} | {r['epoch']} | {r['tokens_seen']:,}"
                    f" | {r['train_loss']:.4f} | {r['val_loss']:.4f}"
                    f" | {_perplexity(r['val_loss']):,.2f} |"
                )
        else:
            lines.append("No evaluation yet.")
        if self._samples:
            lines += ["", "## Samples"]
            for r in self._samples:
                fence = _fence(r["text"])
                lines += [
                    "",
                    f"### Epoch {r['epoch']}, step {r['step']}",
                    f"{fence}text",
                    r["text"],
                    fence,
                ]
        return "\n".join(lines) + "\n"

    def write(self) -> None:
        """Replace the report file (through a temporary file and a rename)."""
        if self._path is None:
            return
        tmp = self._path.with_name(f".{self._path.name}.tmp")
        tmp.write_text(self.render(), encoding="utf-8")
        os.replace(tmp, self._path)
