"""``gptkit export``: the command line of :func:`gptkit.export`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from gptkit.api.export import ExportSettings
from gptkit.cli.flags import given_settings, settings_options


@click.command("export")
@click.argument("out_dir", type=click.Path(path_type=Path))
@settings_options(ExportSettings)
@click.pass_context
def export(ctx: click.Context, out_dir: Path, **opts: Any) -> None:
    """Write weights in Hugging Face transformers format to OUT_DIR.

    OUT_DIR gets config.json, model.safetensors and GPT-2's tokenizer files;
    transformers.GPT2LMHeadModel.from_pretrained(OUT_DIR) loads it and computes
    the same logits. A model without query/key/value biases gets zero biases; an
    untied output head is written as lm_head.weight with tie_word_embeddings
    false. OUT_DIR must not exist or be empty: it is written in a temporary
    directory that is renamed at the end, so it holds a complete export or
    nothing.

    \b
    Examples:
      gptkit export --weights runs/20261128-101500 --format hf my-gpt2
      gptkit export --weights book:model.pth --format hf my-gpt2
      python -c "import transformers as t; t.pipeline('text-generation', 'my-gpt2')"
    """
    from gptkit.api.export import export as run_export

    settings = ExportSettings.create(given_settings(ctx, opts, ExportSettings))
    done = run_export(out_dir, settings)
    head = "tied" if done.tied_head else "untied"
    heads = f"{done.n_heads} head{'s' if done.n_heads != 1 else ''}"
    click.echo(
        f"exported {done.source} ({done.n_layers} layers, {done.emb_dim} wide,"
        f" {heads}, {head} output head, {done.megabytes:,.1f} MB) to {done.out}"
    )
    click.echo(f"files: {', '.join(done.files)}")
    click.echo(
        f"load it with: transformers.GPT2LMHeadModel.from_pretrained({str(done.out)!r})"
    )
