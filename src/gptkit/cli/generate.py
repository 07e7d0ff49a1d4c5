"""``gptkit generate``: text from a prompt with any sampler."""

from __future__ import annotations

import sys
from typing import Any

import click

from gptkit.cli.options import device_option, echo_json, parse_option_pairs
from gptkit.core.errors import GptkitError


def choose_sampler(opts: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The sampler name and options from --sampler, -o and the shortcut flags.

    Without --sampler: top-k when --temperature > 0 or --top-k is given, else
    greedy (the book's ``generate``). Shortcut flags become sampler options.
    """
    shortcuts = {
        k: opts[k] for k in ("temperature", "top_k") if opts.get(k) is not None
    }
    name = opts["sampler"]
    if name is None:
        sampling = shortcuts.get("temperature", 0) > 0 or "top_k" in shortcuts
        name = "top-k" if sampling else "greedy"
        if name == "greedy":
            shortcuts.pop("temperature", None)
    options: dict[str, Any] = {**shortcuts, **parse_option_pairs(tuple(opts["option"]))}
    return name, options


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
    name, options = choose_sampler(opts)
    sampler = get_registry().samplers.create(name, options)
    device = resolve_device(opts["device"])
    model, _ = model_from_spec(
        opts["weights"], device=device, dtype=resolve_dtype(opts["dtype"])
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
