"""gptkit-example-plugin: one component of every kind, registered lazily.

This module is what the ``gptkit`` entry point names, so gptkit imports it to
list commands and components (``gptkit --help``, ``gptkit plugins``). It must
stay cheap: no torch here. Each ``Component`` names its class as a
``"module:Class"`` string that gptkit imports only when the component is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gptkit import hookimpl
from gptkit.core.interfaces import Component

if TYPE_CHECKING:
    import click

__version__ = "0.1.0"


@hookimpl
def register_samplers() -> list[Component]:
    return [
        Component(
            "locally-typical",
            "gptkit_example.sampler:LocallyTypical",
            "Locally typical sampling (Meister et al., 2022).",
        )
    ]


@hookimpl
def register_schedulers() -> list[Component]:
    return [
        Component(
            "inverse-sqrt",
            "gptkit_example.scheduler:InverseSqrt",
            "Linear warmup, then decay with the inverse square root of the step.",
        )
    ]


@hookimpl
def register_loggers() -> list[Component]:
    return [
        Component(
            "markdown",
            "gptkit_example.logger:MarkdownReport",
            "report.md: the run, a table of every evaluation and the samples.",
        )
    ]


@hookimpl
def register_corpora() -> list[Component]:
    return [
        Component(
            "us-documents",
            "gptkit_example.corpus:UsDocuments",
            "The Declaration of Independence and two Lincoln speeches (public domain).",
        )
    ]


@hookimpl
def register_commands(cli: click.Group) -> None:
    # click is cheap and the command module imports nothing heavy at module level.
    from gptkit_example.commands import corpus_stats

    cli.add_command(corpus_stats)
