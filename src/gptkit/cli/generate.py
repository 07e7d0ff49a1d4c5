"""``gptkit generate``: text from a prompt with any sampler."""

from __future__ import annotations

import sys
from typing import Any

import click

from gptkit.cli.flags import device_option, echo_json, parse_option_pairs
from gptkit.core.errors import GptkitError

SHORTCUTS = ("temperature", "top_k", "top_p", "min_p", "num_beams")
ENGINE_OPTIONS = ("repetition_penalty", "no_repeat_ngram_size")


def choose_sampler(opts: dict[str, Any]) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(sampler name, sampler options, engine options) from the command's flags.

    Without --sampler: beam when --num-beams > 1, top-p with --top-p, min-p with
    --min-p, top-k when --temperature > 0 or --top-k is given (the book's
    ``generate``), else greedy. Shortcut flags become sampler options; the
    penalties (flags or -o) are engine options that work with every sampler.
    """
    given = {k: opts[k] for k in SHORTCUTS if opts.get(k) is not None}
    name = opts["sampler"]
    if name is None:
        if given.get("num_beams", 1) > 1:
            name = "beam"
        elif "top_p" in given:
            name = "top-p"
        elif "min_p" in given:
            name = "min-p"
        elif given.get("temperature", 0) > 0 or "top_k" in given:
            name = "top-k"
        else:
            name = "greedy"
    if name == "greedy" and given.get("temperature") == 0:
        given.pop("temperature")
    if given.get("num_beams") == 1 and name != "beam":
        given.pop("num_beams")
    options: dict[str, Any] = {**given, **parse_option_pairs(tuple(opts["option"]))}
    engine = {k: opts[k] for k in ENGINE_OPTIONS if opts.get(k) is not None}
    for key in ENGINE_OPTIONS:
        if key in options:
            engine[key] = options.pop(key)
    return name, options, engine


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
@click.option(
    "--weights",
    required=True,
    metavar="SPEC",
    help="RUN_DIR or checkpoint dir, hf:gpt2, book:model.pth, ...",
)
@click.option(
    "--n-heads",
    type=click.IntRange(min=1),
    help="Attention heads, for weights whose file does not say (book: .pth files).",
)
@click.option("--sampler", help="Sampler plugin (greedy, top-k, ...).")
@click.option(
    "-o",
    "--option",
    multiple=True,
    metavar="KEY=VALUE",
    help="Sampler option, repeatable (-o temperature=0.8).",
)
@click.option(
    "--temperature",
    type=click.FloatRange(min=0),
    help="Shortcut for -o temperature=T (0 = greedy).",
)
@click.option("--top-k", type=click.IntRange(min=1), help="Shortcut for -o top_k=K.")
@click.option(
    "--top-p",
    type=click.FloatRange(0, 1, min_open=True),
    help="Nucleus sampling (sampler top-p) with this top_p.",
)
@click.option(
    "--min-p",
    type=click.FloatRange(0, 1, min_open=True),
    help="Min-p sampling (sampler min-p) with this min_p.",
)
@click.option(
    "--num-beams",
    type=click.IntRange(min=1),
    help="Beam search (sampler beam) with this many beams.",
)
@click.option(
    "--repetition-penalty",
    type=click.FloatRange(min=0, min_open=True),
    help="Penalise tokens already in the text (> 1; any sampler).",
)
@click.option(
    "--no-repeat-ngram-size",
    type=click.IntRange(min=0),
    help="Never repeat an n-gram of this size (any sampler).",
)
@click.option(
    "--max-new-tokens", type=click.IntRange(min=0), default=50, show_default=True
)
@click.option("--stop", "stops", multiple=True, help="Stop at this string; repeatable.")
@click.option("--seed", type=int, help="Seed for reproducible sampling.")
@click.option(
    "--no-truncate",
    is_flag=True,
    help="Refuse a prompt longer than the context instead of keeping its end.",
)
@click.option(
    "--dtype",
    type=click.Choice(["fp32", "bf16", "fp16"]),
    default="fp32",
    show_default=True,
)
@device_option
@click.option("--stream", is_flag=True, help="Print tokens as they are generated.")
@click.option(
    "--json",
    "json_",
    is_flag=True,
    help="Print prompts, texts, token ids and finish reasons as JSON.",
)
def generate(**opts: Any) -> None:
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
    import torch

    from gptkit.core.device import resolve_device, resolve_dtype
    from gptkit.core.generate import generate_text
    from gptkit.core.registry import get_registry
    from gptkit.core.weights import model_from_spec

    prompts = read_prompts(opts["prompts"])
    if opts["stream"] and (len(prompts) > 1 or opts["json_"]):
        raise GptkitError("--stream works with one prompt and without --json")
    name, options, engine = choose_sampler(opts)
    sampler = get_registry().samplers.create(name, options)
    if opts["stream"] and name == "beam":
        raise GptkitError("--stream needs a per-token sampler, not beam search")
    device = resolve_device(opts["device"])
    model, _ = model_from_spec(
        opts["weights"],
        device=device,
        dtype=resolve_dtype(opts["dtype"]),
        hints={"n_heads": opts["n_heads"]},
    )
    if opts["seed"] is not None:
        torch.manual_seed(opts["seed"])

    def stream(row: int, delta: str) -> None:
        click.echo(delta, nl=False)

    if opts["stream"]:
        click.echo(prompts[0], nl=False)
    results = generate_text(
        model,
        prompts,
        sampler,
        max_new_tokens=opts["max_new_tokens"],
        stop_strings=opts["stops"],
        seed=opts["seed"],
        truncate=not opts["no_truncate"],
        on_text=stream if opts["stream"] else None,
        **engine,
    )
    if opts["json_"]:
        echo_json({"sampler": name, "results": [r.to_dict() for r in results]})
    elif opts["stream"]:
        click.echo()
    else:
        for i, r in enumerate(results):
            if i:
                click.echo()
            click.echo(r.prompt + r.completion)
