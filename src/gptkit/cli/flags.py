"""Options shared by several commands (the book's flag names), and helpers that
turn them into core objects. Torch-free at import time."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from gptkit.core.config import GPTConfig

F = TypeVar("F", bound=Callable[..., Any])

PRESET_NAMES = (
    "gpt2-124m",
    "gpt2-355m",
    "gpt2-774m",
    "gpt2-1558m",
    "tiny",
    "mini",
    "small",
)
MODEL_FIELDS = (
    "context_length",
    "emb_dim",
    "n_layers",
    "n_heads",
    "drop_rate",
    "qkv_bias",
)


def _stack(*decorators: Callable[[F], F]) -> Callable[[F], F]:
    def apply(f: F) -> F:
        for decorator in reversed(decorators):
            f = decorator(f)
        return f

    return apply


def model_options(default_preset: str | None) -> Callable[[F], F]:
    """--preset plus per-field overrides of the model config."""
    return _stack(
        click.option(
            "--preset",
            type=click.Choice(PRESET_NAMES),
            default=default_preset,
            show_default=True,
            help="Model size preset.",
        ),
        click.option(
            "--context-length",
            type=click.IntRange(min=1),
            help="Context length in tokens (overrides the preset).",
        ),
        click.option("--emb-dim", type=click.IntRange(min=1), help="Embedding width."),
        click.option(
            "--n-layers", type=click.IntRange(min=1), help="Transformer blocks."
        ),
        click.option("--n-heads", type=click.IntRange(min=1), help="Attention heads."),
        click.option(
            "--drop-rate",
            type=click.FloatRange(0.0, 1.0, max_open=True),
            help="Dropout rate.",
        ),
        click.option(
            "--qkv-bias/--no-qkv-bias",
            default=None,
            help="Bias in the query/key/value projections.",
        ),
    )


def device_option(f: F) -> F:
    return click.option(
        "--device",
        type=click.Choice(["auto", "cpu", "cuda", "mps"]),
        default="auto",
        show_default=True,
        help="auto: CUDA, then Apple MPS, then CPU.",
    )(f)


def corpus_option(default: str | None) -> Callable[[F], F]:
    return click.option(
        "--corpus",
        "corpora",
        multiple=True,
        default=(default,) if default else (),
        show_default=True,
        metavar="NAME|PATH",
        help="A corpus plugin name (python-docs, the-verdict, ...) or a text file,"
        " directory or glob; repeatable.",
    )


def data_options(batch_size: int, train_ratio: float = 0.9) -> Callable[[F], F]:
    return _stack(
        click.option(
            "--batch-size",
            type=click.IntRange(min=1),
            default=batch_size,
            show_default=True,
            help="Sequences per batch.",
        ),
        click.option(
            "--stride",
            type=click.IntRange(min=1),
            help="Tokens between window starts [default: context length].",
        ),
        click.option(
            "--train-ratio",
            type=click.FloatRange(0, 1, min_open=True, max_open=True),
            default=train_ratio,
            show_default=True,
            help="Share of the characters used for training.",
        ),
    )


def model_config(preset: str, overrides: dict[str, Any]) -> GPTConfig:
    """The preset with the given fields replaced."""
    from gptkit.core.config import get_preset

    return get_preset(preset).replace(**{k: overrides.get(k) for k in MODEL_FIELDS})


def parse_option_pairs(pairs: tuple[str, ...]) -> dict[str, str]:
    from gptkit.core.component_options import parse_pairs

    return parse_pairs(pairs)


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2))


def weight_hints(opts: dict[str, Any]) -> dict[str, Any]:
    """Model settings given explicitly on the command line, for loaders that
    cannot read them from the file (the book's .pth files lack the number of
    heads): ``--n-heads``, and ``--preset`` unless it is only the default."""
    ctx = click.get_current_context(silent=True)
    explicit_preset = ctx is not None and ctx.get_parameter_source("preset") in (
        click.core.ParameterSource.COMMANDLINE,
        click.core.ParameterSource.ENVIRONMENT,
    )
    return {
        "n_heads": opts.get("n_heads"),
        "preset": opts.get("preset") if explicit_preset else None,
    }
