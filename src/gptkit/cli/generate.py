"""``gptkit generate``: the command line of :meth:`LanguageModel.generate`."""

from __future__ import annotations

import sys
from typing import Any

import click

from gptkit.api.settings import GenerateSettings, LoadSettings
from gptkit.cli.flags import echo_json, given_settings, settings_options
from gptkit.errors import GptkitError


def read_prompts(prompts: tuple[str, ...]) -> list[str]:
    if prompts == ("-",):
        lines = [line.rstrip("\n") for line in sys.stdin]
        if not lines:
            raise GptkitError("no prompts on standard input")
        return lines
    if not prompts:
        raise GptkitError(
            'give a prompt ("" starts from <|endoftext|>; - reads one per line'
            " from standard input)"
        )
    return list(prompts)


@click.command()
@click.argument("prompts", nargs=-1)
@settings_options(
    LoadSettings,
    only=("weights", "n_heads", "dtype", "device", "quantize", "compile", "max_memory"),
)
@settings_options(GenerateSettings)
@click.option("--stream", is_flag=True, help="Print text as it is generated.")
@click.option(
    "--progress/--no-progress",
    default=None,
    help="A progress bar of the decoding steps on stderr [default: when stderr"
    " is a terminal, or GPTKIT_PROGRESS=1].",
)
@click.option(
    "--json",
    "json_",
    is_flag=True,
    help="Print prompts, texts, token ids and finish reasons as JSON.",
)
@click.pass_context
def generate(ctx: click.Context, **opts: Any) -> None:
    """Generate text from one or more prompts with any sampler.

    Several prompts (arguments, or one per line from standard input with -)
    are generated as one batch. An empty prompt starts from <|endoftext|>.

    \b
    Examples:
      gptkit generate --weights runs/20261128-101500 "Every effort moves you"
      gptkit generate --weights hf:gpt2 "Every effort moves you" \\
          --temperature 1.4 --top-k 25 --seed 123
      gptkit generate --weights hf:gpt2 "Every effort moves you" --sampler top-p \\
          -o top_p=0.9 -o temperature=0.8 --stream
      gptkit generate --weights hf:gpt2 "Every effort moves you" --num-beams 4 \\
          -o length_penalty=0.6 -o num_return_sequences=2 --json
      printf 'The list\\nA dictionary\\n' | gptkit generate --weights RUN -
    """
    from gptkit.api.model import LanguageModel
    from gptkit.api.sampling import resolve_sampler

    prompts = read_prompts(opts["prompts"])
    if opts["stream"] and (len(prompts) > 1 or opts["json_"]):
        raise GptkitError("--stream works with one prompt and without --json")
    load = LoadSettings.create(given_settings(ctx, opts, LoadSettings))
    if load.weights is None:
        raise click.UsageError("--weights is required (RUN_DIR, hf:gpt2, ...)")
    sampling = given_settings(ctx, opts, GenerateSettings)
    choice = resolve_sampler(GenerateSettings.create(sampling))  # fails fast
    if opts["stream"] and not choice.streams:
        raise GptkitError(
            f"--stream needs a per-token sampler; {choice.name} returns whole sequences"
        )
    lm = LanguageModel.from_settings(load)
    if opts["stream"]:
        click.echo(prompts[0], nl=False)
        for piece in lm.stream(prompts[0], **sampling):
            click.echo(piece, nl=False)
        click.echo()
        return
    results = lm.complete(prompts, progress=opts["progress"], **sampling)
    if opts["json_"]:
        echo_json({"sampler": choice.name, "results": [r.to_dict() for r in results]})
        return
    for i, r in enumerate(results):
        if i:
            click.echo()
        click.echo(r.prompt + r.completion)
