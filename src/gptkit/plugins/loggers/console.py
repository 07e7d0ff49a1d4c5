"""Console output: what the run is, the book's evaluation lines, the samples,
and a tqdm progress bar on stderr."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

from gptkit.core.interfaces import Logger, RunInfo


def _millions(n: int) -> str:
    return f"{n / 1e6:.1f}M" if n >= 1e5 else f"{n:,}"


def _steps(n: int) -> str:
    return f"{n:,} step" + ("" if n == 1 else "s")


def _plan(run: RunInfo) -> str:
    """``4 epochs x 94 steps = 376 steps``, or with a step limit below that,
    ``10 steps (the step limit; 4 epochs would be 376 steps)``."""
    epochs = f"{run.epochs} epoch" + ("" if run.epochs == 1 else "s")
    full = run.epochs * run.steps_per_epoch
    if run.total_steps < full:
        limit = _steps(run.total_steps)
        return f"{limit} (the step limit; {epochs} would be {_steps(full)})"
    return f"{epochs} x {_steps(run.steps_per_epoch)} = {_steps(run.total_steps)}"


def _parameters(run: RunInfo) -> int:
    """The model's parameters (a QLoRA base's integer weights are buffers, not
    parameters: its run records their count)."""
    adapter = run.config.get("adapter") or {}
    if "base_parameters" in adapter:
        return adapter["base_parameters"] + adapter["trainable_parameters"]
    return run.num_parameters


def _adapter_line(run: RunInfo) -> list[str]:
    """``lora: r=16, alpha=16.0 on 73 layers: 2.4M of 127.4M parameters train``."""
    adapter = run.config.get("adapter")
    if not adapter:
        return []
    trainable = adapter["trainable_parameters"]
    options = ", ".join(f"{k}={v}" for k, v in adapter["options"].items() if v != "")
    total = _parameters(run)
    share = 100 * trainable / max(1, total)
    quantized = f", quantized to {adapter['quantize']}" if "quantize" in adapter else ""
    return [
        f"{adapter['name']}: {options}; {_millions(trainable)} of"
        f" {_millions(total)} parameters train ({share:.2f}%),"
        f" the base ({adapter['base']}) is frozen{quantized}"
    ]


class ConsoleLogger(Logger):
    """Prints ``Ep 1 (Step 000000): Train loss 9.781, Val loss 9.933`` lines."""

    name = "console"
    summary = "The book's progress lines, per-epoch samples and a progress bar."

    @dataclass(frozen=True)
    class Options:
        progress: bool | None = field(
            default=None,
            metadata={
                "help": "show a progress bar on stderr (default: when stderr is"
                " a terminal, or GPTKIT_PROGRESS=1)"
            },
        )

    def start(self, run: RunInfo) -> None:
        from gptkit.system.progress import progress_bar, progress_wanted

        cfg = run.config
        model = cfg.get("model", {})
        data = cfg.get("data", {})
        lines = [
            f"model: {cfg.get('preset', 'custom')}, {_millions(_parameters(run))}"
            f" parameters ({model.get('n_layers')} layers, {model.get('emb_dim')} wide,"
            f" {model.get('n_heads')} heads, context {model.get('context_length')})",
            f"corpus: {', '.join(data.get('corpus', []))}: "
            f"{data.get('characters', 0):,} characters,"
            f" {data.get('tokens', 0):,} tokens"
            f" ({run.train_tokens:,} training tokens per epoch, {run.val_tokens:,}"
            " validation)",
            *_adapter_line(run),
            f"training: {_plan(run)} on {cfg.get('device', '?')}"
            + (f", resuming at step {run.start_step}" if run.start_step else ""),
        ]
        if run.run_dir is not None:
            lines.append(f"run directory: {run.run_dir}")
        for line in lines:
            print(line, flush=True)
        self._bar = None
        if progress_wanted(self.options.progress):
            self._bar = progress_bar(
                run.total_steps, initial=run.start_step, unit="step", enabled=True
            )

    def _print(self, text: str) -> None:
        if self._bar is not None:
            self._bar.write(text, file=sys.stdout)
        else:
            print(text, flush=True)

    def log_step(self, row: dict[str, Any]) -> None:
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix(loss=f"{row['loss']:.3f}", lr=f"{row['lr']:.2e}")

    def log_eval(self, row: dict[str, Any]) -> None:
        self._print(
            f"Ep {row['epoch']} (Step {row['step']:06d}): "
            f"Train loss {row['train_loss']:.3f}, Val loss {row['val_loss']:.3f}"
        )

    def log_sample(self, row: dict[str, Any]) -> None:
        self._print(row["text"].replace("\n", " "))

    def message(self, text: str) -> None:
        self._print(text)

    def finish(self, summary: dict[str, Any]) -> None:
        if self._bar is not None:
            self._bar.close()
        if summary.get("status") == "completed":
            tail = ""
            if "train_loss" in summary:
                tail = (
                    f"; train loss {summary['train_loss']:.3f},"
                    f" val loss {summary['val_loss']:.3f}"
                )
            print(
                f"done: {summary['steps']} steps, {summary['tokens_seen']:,} tokens"
                f" in {summary['seconds']:.1f}s{tail}",
                flush=True,
            )
