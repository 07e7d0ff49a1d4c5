"""``gptkit corpus-stats``: a command added by a plugin (``register_commands``).

It works with every corpus gptkit knows, built-in or from a plugin, through the
registry. Heavy modules (the tokenizer) are imported inside the command, so
``gptkit --help`` stays fast.
"""

from __future__ import annotations

import json
from typing import Any

import click


def corpus_numbers(spec: str) -> dict[str, Any]:
    """Documents, characters, words and GPT-2 tokens of one corpus.

    ``spec`` is a registered corpus name or a path (the built-in ``files`` corpus).
    """
    from gptkit.core.registry import get_registry
    from gptkit.core.tokenizer import encode

    corpora = get_registry().corpora
    corpus = (
        corpora.create(spec)
        if spec in corpora
        else corpora.create("files", paths=(spec,))
    )
    docs = list(corpus.documents())
    characters = sum(len(d) for d in docs)
    tokens = sum(len(encode(d)) for d in docs)
    return {
        "corpus": spec,
        "documents": len(docs),
        "characters": characters,
        "words": sum(len(d.split()) for d in docs),
        "tokens": tokens,
        "characters_per_token": round(characters / tokens, 3) if tokens else None,
    }


@click.command("corpus-stats")
@click.argument("corpora", nargs=-1, required=True, metavar="NAME|PATH...")
@click.option("--json", "json_", is_flag=True, help="Print JSON.")
def corpus_stats(corpora: tuple[str, ...], json_: bool) -> None:
    """Count the documents, characters, words and GPT-2 tokens of corpora.

    Added by the gptkit-example-plugin package.

    \b
    Examples:
      gptkit corpus-stats us-documents
      gptkit corpus-stats python-docs notes/ --json
    """
    rows = [corpus_numbers(spec) for spec in corpora]
    if json_:
        click.echo(json.dumps(rows, indent=2))
        return
    width = max(len("corpus"), *(len(r["corpus"]) for r in rows))
    click.echo(
        f"{'corpus':<{width}}  {'documents':>9}  {'characters':>11}  {'words':>9}"
        f"  {'tokens':>9}  chars/token"
    )
    for r in rows:
        click.echo(
            f"{r['corpus']:<{width}}  {r['documents']:>9,}  {r['characters']:>11,}"
            f"  {r['words']:>9,}  {r['tokens']:>9,}  {r['characters_per_token']}"
        )
