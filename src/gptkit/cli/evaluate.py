"""``gptkit eval``: the command line of :meth:`LanguageModel.evaluate`."""

from __future__ import annotations

from typing import Any

import click

from gptkit.api.settings import EvalSettings, LoadSettings
from gptkit.cli.flags import echo_json, given_settings, settings_options

_DATA = ("corpus", "context_length", "batch_size", "stride", "train_ratio", "eval_iter")


@click.command("eval")
@settings_options(EvalSettings)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="A progress bar of the batches on stderr [default: when stderr is a"
    " terminal, or GPTKIT_PROGRESS=1].",
)
@click.option("--json", "json_", is_flag=True, help="Print one JSON object.")
@click.pass_context
def evaluate(ctx: click.Context, **opts: Any) -> None:
    """Training and validation loss and perplexity on a corpus.

    The text is split at --train-ratio (by characters), tokenized and cut into
    windows of --context-length tokens every --stride tokens, as in the book's
    chapter 5; the losses are means over the batches of each split. Without
    --weights the model is a random init of --preset from --seed.

    \b
    Examples:
      gptkit eval --preset gpt2-124m --context-length 256 \\
          --corpus the-verdict --seed 123 --json   # the book's 10.98758 / 10.98110
      gptkit eval --weights runs/20261128-101500 --corpus notes.txt
      gptkit eval --weights hf:gpt2 --corpus the-verdict \\
          --context-length 256                       # exercise 5.5: 3.7547 / 3.5596
      gptkit eval --weights book:model.pth --n-heads 16 --corpus the-verdict
    """
    from gptkit.api.model import LanguageModel

    given = given_settings(ctx, opts, EvalSettings)
    settings = EvalSettings.create(given)  # every value checked before loading
    load = {k: v for k, v in given.items() if k in LoadSettings.names()}
    if settings.weights is None:
        # A random init takes the context length (a model setting) and the seed.
        load["seed"] = settings.seed
        load.setdefault("preset", settings.preset_name())
    else:
        load.pop("context_length", None)  # evaluation windows, not the model's
    lm = LanguageModel.from_settings(LoadSettings.create(load))
    data = {k: v for k, v in given.items() if k in _DATA}
    result = lm.evaluate(seed=settings.seed, progress=opts["progress"], **data)
    if opts["json_"]:
        echo_json(result)
        return
    rows = [
        ("weights", result["weights"]),
        (
            "tokens",
            f"{result['train_tokens']:,} training, {result['val_tokens']:,} validation",
        ),
        (
            "training loss",
            f"{result['train_loss']:.5f}"
            f" (perplexity {result['train_perplexity']:,.1f})",
        ),
        (
            "validation loss",
            f"{result['val_loss']:.5f} (perplexity {result['val_perplexity']:,.1f})",
        ),
    ]
    for label, value in rows:
        click.echo(f"{label + ':':<17} {value}")
