"""``gptkit eval``: the command line of :meth:`LanguageModel.evaluate`."""

from __future__ import annotations

from typing import Any

import click

from gptkit.api.settings import EvalSettings
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
      gptkit eval --weights runs/sft --data instruction-data   # response-only loss
    """
    from gptkit.api.model import load_for_evaluation

    given = given_settings(ctx, opts, EvalSettings)
    settings = EvalSettings.create(given)  # every value checked before loading
    lm = load_for_evaluation(settings)
    if settings.data is not None:
        _instructions(lm, settings, given, opts["json_"])
        return
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


def _instructions(lm: Any, settings: Any, given: dict[str, Any], json_: bool) -> None:
    """``--data``: the response-only loss of an instruction data set's test split."""
    if settings.corpus:
        raise click.UsageError("--data and --corpus both name the text; give one")
    batch = given.get("batch_size", 8)
    result = lm.evaluate_instructions(settings.data, batch_size=batch)
    if json_:
        echo_json(result)
        return
    click.echo(f"{'weights:':<17} {result['weights']} ({result['prompt_style']} style)")
    click.echo(
        f"{'test split:':<17} {result['test_records']} records,"
        f" {result['response_tokens']:,} response tokens"
    )
    click.echo(
        f"{'response loss:':<17} {result['test_loss']:.5f}"
        f" (perplexity {result['test_perplexity']:,.2f})"
    )
