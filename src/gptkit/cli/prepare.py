"""``gptkit prepare``: the command line of :func:`gptkit.prepare`."""

from __future__ import annotations

from typing import Any

import click

from gptkit.api.prepare import PrepareSettings
from gptkit.cli.flags import echo_json, given_settings, settings_options


@click.command()
@click.argument("corpora", nargs=-1, required=True, metavar="CORPUS...")
@settings_options(PrepareSettings)
@click.option("--json", "json_", is_flag=True, help="Print the metadata as JSON.")
@click.pass_context
def prepare(ctx: click.Context, corpora: tuple[str, ...], **opts: Any) -> None:
    """Tokenize text corpora into a memory-mapped token file for `train --data`.

    CORPUS is a text file, a directory (its *.txt files, recursively), a glob or
    a corpus plugin's name; each file is one document, and documents are
    separated by <|endoftext|>. Files are cut into shards tokenized in parallel;
    an interrupted preparation continues when rerun with the same inputs. The
    result streams from disk, so the corpus may be larger than memory.

    \b
    Examples:
      gptkit prepare data/*.txt --out corpora/mydata
      gptkit prepare books/ wiki/ --out corpora/big --train-ratio 0.999
      gptkit train --data corpora/big --preset small --batch-size 16
    """
    from gptkit.api.prepare import prepare as run_prepare

    settings = PrepareSettings.create(given_settings(ctx, opts, PrepareSettings))

    def message(text: str) -> None:
        click.echo(text, err=True)

    meta = run_prepare(corpora, settings, message=message)
    out = settings.out
    if opts["json_"]:
        echo_json({"out": str(out), **meta})
        return
    seconds = meta.get("seconds")
    speed = (
        f" in {seconds:.1f}s ({meta['bytes'] / 1e6 / seconds:.1f} MB/s)"
        if seconds
        else ""
    )
    click.echo(
        f"{out}: {meta['tokens']:,} tokens ({meta['train_tokens']:,} training,"
        f" {meta['val_tokens']:,} validation) from {meta['documents']:,} documents,"
        f" {meta['bytes']:,} bytes{speed}"
    )
