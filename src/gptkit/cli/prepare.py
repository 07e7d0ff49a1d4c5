"""``gptkit prepare``: tokenize corpora into a memory-mapped token file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from gptkit.cli.flags import echo_json


def _default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@click.command()
@click.argument("corpora", nargs=-1, required=True, metavar="CORPUS...")
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory of the prepared corpus (meta.json + tokens.bin).",
)
@click.option(
    "--train-ratio",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=0.9,
    show_default=True,
    help="Share of the tokens used for training; the rest is validation.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    help="Tokenizer processes [default: the CPUs available].",
)
@click.option(
    "--shard-mb",
    type=click.FloatRange(min=0, min_open=True),
    default=4.0,
    show_default=True,
    help="Size of the pieces the input files are cut into (MiB).",
)
@click.option(
    "--progress/--no-progress", default=True, help="Show a progress bar on stderr."
)
@click.option("--json", "json_", is_flag=True, help="Print the metadata as JSON.")
def prepare(**opts: Any) -> None:
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
    from gptkit.core.prepared import prepare as run_prepare

    out: Path = opts["out"]

    def message(text: str) -> None:
        click.echo(text, err=True)

    meta = run_prepare(
        opts["corpora"],
        out,
        train_ratio=opts["train_ratio"],
        workers=opts["workers"] or _default_workers(),
        shard_bytes=max(1, int(opts["shard_mb"] * (1 << 20))),
        progress=opts["progress"],
        message=message,
    )
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
