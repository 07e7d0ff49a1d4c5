"""Built-in weight loaders, chosen by the weight spec's prefix (``hf:gpt2``,
``book:model.pth``); a bare path goes to the loader whose ``accepts`` says yes,
else to ``native``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gptkit import hookimpl

if TYPE_CHECKING:
    import click


@hookimpl
def register_weight_loaders() -> list[str]:
    return [
        "gptkit.plugins.loaders.native:NativeLoader",
        "gptkit.plugins.loaders.book:BookLoader",
        "gptkit.plugins.loaders.hf:HFLoader",
    ]


@hookimpl
def register_commands(cli: click.Group) -> None:
    # click only: huggingface_hub is imported when the command runs.
    from gptkit.plugins.loaders.download import download

    cli.add_command(download)
