"""``gptkit.train``, ``gptkit.resume`` and :class:`Run`: a training run as an
object — its settings, metrics, samples, checkpoints, plots and model."""

from __future__ import annotations

import math
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gptkit.core.settings import TrainSettings
from gptkit.errors import GptkitError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from gptkit.api.model import LanguageModel


def train(settings: TrainSettings | None = None, /, **kwargs: Any) -> Run:
    """Train a model and return its :class:`Run` (what ``gptkit train`` does).

    Keywords are :class:`~gptkit.core.settings.TrainSettings`, named as the
    command's options with underscores (``--batch-size`` is ``batch_size``;
    repeatable options take a list: ``corpus=["a.txt", "b.txt"]``,
    ``loggers=["console", "csv"]``, ``scheduler_options={"warmup": 0.2}``).
    The run directory is ``out`` (default ``runs/<timestamp>``).

    >>> run = gptkit.train(corpus="the-verdict", preset="tiny")  # doctest: +SKIP
    >>> run.metrics[-1]  # doctest: +SKIP
    """
    from gptkit.runs.compose import run_training

    if settings is None:
        settings = TrainSettings.create(kwargs)
    elif kwargs:
        settings = settings.replace(**kwargs)
    summary, run_dir = run_training(settings)
    return Run(run_dir, summary=summary)


def resume(run_dir: str | Path, /, **kwargs: Any) -> Run:
    """Continue the run in ``run_dir`` from its newest checkpoint; the result
    is the same as if it had never stopped. Only adjustable settings
    (``loggers``, ``checkpoint_every``, ``keep_last``, ``compile``, ``device``)
    may be given; the others are the run's own."""
    from gptkit.runs.compose import run_training
    from gptkit.runs.resume import resumed_settings

    settings = resumed_settings(Path(run_dir), kwargs)
    summary, directory = run_training(settings, resume=True)
    return Run(directory, summary=summary)


class Run:
    """A run directory, read as an object. ``Run.open(path)`` reads any run;
    :func:`train` and :func:`resume` return one."""

    def __init__(self, directory: str | Path, *, summary: dict[str, Any] | None = None):
        from gptkit.runs.files import read_run_config

        self.dir = Path(directory)
        self.config: dict[str, Any] = read_run_config(self.dir)
        self._summary = summary

    @classmethod
    def open(cls, directory: str | Path) -> Run:
        """The run in ``directory`` (any run written by gptkit)."""
        return cls(directory)

    def __repr__(self) -> str:
        last = self.evals[-1] if self.evals else None
        tail = (
            f", train loss {last['train_loss']:.3f}, val loss {last['val_loss']:.3f}"
            if last
            else ""
        )
        return f"Run({str(self.dir)!r}: {len(self.steps)} steps{tail})"

    # -- what it recorded --------------------------------------------------------

    @property
    def settings(self) -> TrainSettings:
        """The settings the run was started with."""
        from gptkit.runs.files import saved_settings

        return TrainSettings.create(saved_settings(self.dir))

    @property
    def metrics(self) -> list[dict[str, Any]]:
        """The rows of ``metrics.jsonl``: one per optimizer step (``step, epoch,
        tokens_seen, lr, loss``) and one per evaluation (``step, epoch,
        tokens_seen, train_loss, val_loss``)."""
        from gptkit.formats.runfiles import METRICS, read_rows

        return read_rows(self.dir / METRICS)

    @property
    def steps(self) -> list[dict[str, Any]]:
        """The optimizer-step rows of :attr:`metrics`."""
        return [r for r in self.metrics if "loss" in r]

    @property
    def evals(self) -> list[dict[str, Any]]:
        """The evaluation rows of :attr:`metrics`."""
        return [r for r in self.metrics if "val_loss" in r]

    @property
    def samples(self) -> list[dict[str, Any]]:
        """The per-epoch samples (``epoch, step, tokens_seen, prompt, text``)."""
        from gptkit.formats.runfiles import SAMPLES, read_rows

        return read_rows(self.dir / SAMPLES)

    @property
    def checkpoints(self) -> list[Path]:
        """Checkpoint directories, oldest first."""
        from gptkit.core.checkpoints.layout import list_checkpoints

        return list_checkpoints(self.dir / "checkpoints")

    @property
    def summary(self) -> dict[str, Any]:
        """How the run ended: the trainer's summary when this object started
        it, else what its files say (steps, tokens, last losses)."""
        if self._summary is not None:
            return dict(self._summary)
        steps, evals = self.steps, self.evals
        summary: dict[str, Any] = {
            "steps": len(steps),
            "tokens_seen": steps[-1]["tokens_seen"] if steps else 0,
            "checkpoint": str(self.checkpoints[-1]) if self.checkpoints else None,
        }
        if evals:
            summary.update(
                train_loss=evals[-1]["train_loss"], val_loss=evals[-1]["val_loss"]
            )
        return summary

    # -- what to do with it --------------------------------------------------------

    def plot(self, kind: str = "loss", path: str | Path | None = None) -> Figure:
        """The book's plot of this run: ``loss`` (training and validation loss
        over epochs and tokens seen), ``perplexity`` or ``lr``. Returned as a
        matplotlib figure (Jupyter shows it inline) and written as a PNG to
        ``path`` (default ``plots/<kind>.png`` in the run directory)."""
        from gptkit.formats.plots import figure, save_figure

        evals, steps = self.evals, self.steps
        if kind != "lr" and not evals:
            raise GptkitError(f"{self.dir} has no evaluation to plot yet")
        steps_per_epoch = self.config.get("steps_per_epoch")
        if not steps_per_epoch:  # runs written before it was recorded
            per_epoch = self.config.get("data", {}).get("train_tokens_per_epoch", 0)
            per_step = steps[0]["tokens_seen"] if steps else 0
            steps_per_epoch = math.ceil(per_epoch / per_step) if per_step else 1
        fig = figure(kind, steps, evals, steps_per_epoch)
        save_figure(fig, Path(path) if path else self.dir / "plots" / f"{kind}.png")
        _show_figures_inline()
        return fig

    @cached_property
    def model(self) -> LanguageModel:
        """The newest checkpoint, loaded (on the run's device choice)."""
        from gptkit.api.model import load

        if not self.checkpoints:
            raise GptkitError(f"{self.dir} has no checkpoint yet")
        return load(str(self.dir))

    def resume(self, **kwargs: Any) -> Run:
        """Continue this run (see :func:`resume`)."""
        return resume(self.dir, **kwargs)


def _show_figures_inline() -> None:
    """In IPython/Jupyter, display returned matplotlib figures as images (the
    figures are built without pyplot, which would otherwise register that)."""
    import sys

    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None  # type: ignore[attr-defined]
    if shell is None:
        return
    from IPython.core.pylabtools import select_figure_formats

    select_figure_formats(shell, {"png"})
