"""The book's training plots (chapter 5, ``plot_losses``), as matplotlib figures.

Figures are built with matplotlib's object-oriented API (``Figure``, no
``pyplot``), so drawing never changes the process's backend: in Jupyter the
returned figure shows inline, elsewhere it is written as a PNG.

- :func:`loss_figure`: training and validation loss over epochs, with a second
  x axis of tokens seen;
- :func:`perplexity_figure`: both perplexities over tokens seen (log scale);
- :func:`lr_figure`: the learning rate at every step (appendix D's figure).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

Rows = Sequence[dict[str, Any]]
KINDS = ("loss", "perplexity", "lr")


def _figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


def _exp(x: float) -> float:
    return math.exp(min(x, 700.0))


def loss_figure(evals: Rows, steps_per_epoch: int) -> Figure:
    """Training and validation loss against epochs (and tokens seen)."""
    epochs = [(r["step"] + 1) / max(1, steps_per_epoch) for r in evals]
    tokens = [r["tokens_seen"] for r in evals]
    train = [r["train_loss"] for r in evals]
    val = [r["val_loss"] for r in evals]
    fig = _figure(6, 4)
    ax1 = fig.add_subplot()
    ax1.plot(epochs, train, label="Training loss")
    ax1.plot(epochs, val, linestyle="-.", label="Validation loss")
    ax1.set_xlabel("Epochs")
    ax1.set_ylabel("Loss")
    ax1.legend(loc="upper right")
    ax2 = ax1.twiny()  # the same curves against tokens seen, drawn invisibly
    ax2.plot(tokens, train, alpha=0)
    ax2.set_xlabel("Tokens seen")
    fig.tight_layout()
    return fig


def perplexity_figure(evals: Rows) -> Figure:
    """Training and validation perplexity against tokens seen."""
    tokens = [r["tokens_seen"] for r in evals]
    fig = _figure(6, 4)
    ax = fig.add_subplot()
    ax.plot(tokens, [_exp(r["train_loss"]) for r in evals], label="Training perplexity")
    ax.plot(
        tokens,
        [_exp(r["val_loss"]) for r in evals],
        linestyle="-.",
        label="Validation perplexity",
    )
    ax.set_yscale("log")
    ax.set_xlabel("Tokens seen")
    ax.set_ylabel("Perplexity")
    ax.legend(loc="upper right")
    fig.tight_layout()
    return fig


def lr_figure(steps: Rows) -> Figure:
    """The learning rate of every optimizer step."""
    fig = _figure(6, 3)
    ax = fig.add_subplot()
    ax.plot([r["step"] for r in steps], [r["lr"] for r in steps])
    ax.set_xlabel("Step")
    ax.set_ylabel("Learning rate")
    fig.tight_layout()
    return fig


def figure(kind: str, steps: Rows, evals: Rows, steps_per_epoch: int) -> Figure:
    """The plot called ``kind`` (loss, perplexity or lr)."""
    if kind == "loss":
        return loss_figure(evals, steps_per_epoch)
    if kind == "perplexity":
        return perplexity_figure(evals)
    if kind == "lr":
        return lr_figure(steps)
    raise ValueError(f"unknown plot {kind!r}; choose one of {', '.join(KINDS)}")


def save_figure(fig: Figure, path: Path) -> None:
    """Write ``fig`` as a PNG, atomically."""
    from gptkit.system.storage import atomic_open, ensure_dir

    ensure_dir(path.parent)
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=120)
