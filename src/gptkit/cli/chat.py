"""``gptkit chat``: an interactive conversation with a finetuned model, in the
prompt style its run recorded (:meth:`LanguageModel.stream_chat`)."""

from __future__ import annotations

import sys
from typing import Any

import click

from gptkit.api.settings import GenerateSettings, LoadSettings
from gptkit.cli.flags import given_settings, settings_options

HELP = (
    "/reset forgets the conversation, /exit (or Ctrl-D) leaves; Ctrl-C stops an answer"
)


@click.command()
@settings_options(
    LoadSettings,
    only=("weights", "n_heads", "dtype", "device", "quantize", "max_memory"),
)
@settings_options(GenerateSettings, exclude=("truncate",))
@click.option("--system", metavar="TEXT", help="A system message opening the chat.")
@click.pass_context
def chat(ctx: click.Context, **opts: Any) -> None:
    """Talk with an instruction-finetuned model, answers streamed as written.

    The model must have a prompt style: a run written by gptkit finetune
    records one, and every turn is formatted in it. The conversation is kept
    (the oldest turns are dropped when it outgrows the context); answers are
    greedy (the book's) unless a sampler or --temperature is given, and end at
    the style's next-turn header, <|endoftext|> or --max-new-tokens (256).

    \b
    Examples:
      gptkit chat --weights runs/sft
      gptkit chat --weights runs/sft --temperature 0.7 --top-k 40 --seed 1
    """
    from gptkit.api.model import LanguageModel

    load = LoadSettings.create(given_settings(ctx, opts, LoadSettings))
    if load.weights is None:
        raise click.UsageError("--weights is required (a finetuned RUN_DIR)")
    sampling = given_settings(ctx, opts, GenerateSettings)
    GenerateSettings.create(sampling)  # fails fast
    lm = LanguageModel.from_settings(load)
    style = lm.prompt_style  # a model without one: a one-line error
    click.echo(f"{lm.spec} ({style.name} prompt style). {HELP}.")
    opening = [{"role": "system", "content": opts["system"]}] if opts["system"] else []
    history = list(opening)
    while True:
        try:
            line = input("you> ")
        except EOFError:
            click.echo()
            return
        except KeyboardInterrupt:
            click.echo("\n(" + HELP + ")")
            continue
        text = line.strip()
        if text in ("/exit", "/quit"):
            return
        if text == "/reset":
            history = list(opening)
            click.echo("(the conversation is forgotten)")
            continue
        if not text:
            continue
        history.append({"role": "user", "content": text})
        history = fit_history(lm, history, len(opening), sampling)
        reply = answer(lm, history, sampling)
        history.append({"role": "assistant", "content": reply})


def answer(lm: Any, history: list[dict[str, str]], sampling: dict[str, Any]) -> str:
    """Stream the reply to ``history``; Ctrl-C stops it (what was written
    stays in the conversation)."""
    pieces: list[str] = []
    click.echo("model> ", nl=False)
    stream = lm.stream_chat(history, **sampling)
    try:
        for piece in stream:
            pieces.append(piece)
            sys.stdout.write(piece)
            sys.stdout.flush()
    except KeyboardInterrupt:
        stream.close()
        click.echo(" [stopped]")
    else:
        click.echo()
    return lm.clean_reply("".join(pieces))


def fit_history(
    lm: Any, history: list[dict[str, str]], keep: int, sampling: dict[str, Any]
) -> list[dict[str, str]]:
    """Drop the oldest exchanges (after the ``keep`` opening messages) until
    the prompt and the answer fit in the context."""
    budget = lm.config.context_length - int(sampling.get("max_new_tokens", 256))
    while len(history) > keep + 1:
        if len(lm.encode(lm.chat_prompt(history))) <= budget:
            break
        history = history[:keep] + history[keep + 2 :]
    return history
