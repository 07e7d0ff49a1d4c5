"""gptkit-example-plugin: a sampler, a scheduler, a logger, a corpus and a command,
registered lazily.

This module is what the ``gptkit`` entry point names, so gptkit imports it to
list commands and components (``gptkit --help``, ``gptkit plugins``). It must
stay cheap: no torch here. Each hook names its classes as ``"module:Class"``
strings: gptkit reads a component's ``name`` and ``summary`` from the class's
source and imports the module only when the component is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gptkit import hookimpl

if TYPE_CHECKING:
    import click

__version__ = "0.1.0"


@hookimpl
def register_samplers() -> list[str]:
    return ["gptkit_example.sampler:LocallyTypical"]


@hookimpl
def register_schedulers() -> list[str]:
    return ["gptkit_example.scheduler:InverseSqrt"]


@hookimpl
def register_loggers() -> list[str]:
    return ["gptkit_example.logger:MarkdownReport"]


@hookimpl
def register_corpora() -> list[str]:
    return ["gptkit_example.corpus:UsDocuments"]


@hookimpl
def register_commands(cli: click.Group) -> None:
    # click is cheap and the command module imports nothing heavy at module level.
    from gptkit_example.commands import corpus_stats

    cli.add_command(corpus_stats)
