"""The root ``gptkit`` group: lazy built-in commands, plugin commands, and one-line
errors (``gptkit: error: ...``, exit code 2) instead of tracebacks."""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from gptkit._version import __version__
from gptkit.core.errors import GptkitError

BUILTIN_COMMANDS = {
    "train": "gptkit.cli.train:train",
    "eval": "gptkit.cli.evaluate:evaluate",
    "generate": "gptkit.cli.generate:generate",
    "export": "gptkit.cli.export:export",
    "prepare": "gptkit.cli.prepare:prepare",
    "plugins": "gptkit.cli.plugins:plugins",
    "bench": "gptkit.cli.bench:bench",
    "serve": "gptkit.cli.serve:serve",
}


class LazyGroup(click.Group):
    """Imports a built-in command only when it runs; asks plugins for their
    commands only when a name is unknown or the command list is shown."""

    _plugins_loaded = False

    def _load_plugin_commands(self) -> None:
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        from gptkit.core.registry import add_plugin_commands, get_registry

        add_plugin_commands(get_registry(), self)

    def list_commands(self, ctx: click.Context) -> list[str]:
        try:
            self._load_plugin_commands()
        except GptkitError as exc:  # strict mode: still list the built-ins
            click.echo(f"gptkit: error: {exc}", err=True)
        return sorted({*BUILTIN_COMMANDS, *self.commands})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in BUILTIN_COMMANDS:
            module, _, attr = BUILTIN_COMMANDS[name].partition(":")
            return getattr(importlib.import_module(module), attr)
        if name not in self.commands:
            self._load_plugin_commands()
        return self.commands.get(name)

    def main(self, *args: Any, **kwargs: Any) -> Any:
        """Run with one-line errors: bad input exits 2, Ctrl-C exits 130."""
        kwargs["standalone_mode"] = False
        try:
            rv = super().main(*args, **kwargs)
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)
        except click.exceptions.Abort:
            click.echo("gptkit: aborted", err=True)
            sys.exit(130)
        except click.ClickException as exc:
            click.echo(f"gptkit: error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except GptkitError as exc:
            click.echo(f"gptkit: error: {_cli_message(exc)}", err=True)
            sys.exit(130 if type(exc).__name__ == "TrainingInterrupted" else 2)
        except KeyboardInterrupt:
            click.echo("gptkit: interrupted", err=True)
            sys.exit(130)
        except BrokenPipeError:
            sys.exit(0)
        if isinstance(rv, int):
            sys.exit(rv)
        sys.exit(0)


def _cli_message(exc: GptkitError) -> str:
    """The error's message, naming settings by their command-line options."""
    from gptkit.core.errors import SettingError

    if not isinstance(exc, SettingError):
        return str(exc)
    from gptkit.core.settings import all_settings_flags

    flags = all_settings_flags()
    return exc.render(lambda name: flags.get(name, "--" + name.replace("_", "-")))


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gptkit")
def cli() -> None:
    """Pretrain, evaluate, sample from and load GPT-2-style language models.

    \b
    Start here:
      gptkit train                       # a small GPT on Python's docs (CPU, minutes)
      gptkit generate --weights runs/NAME "The list"
      gptkit train --corpus the-verdict --preset gpt2-124m --context-length 256 \\
          --epochs 10 --batch-size 2 --lr 4e-4 --weight-decay 0.1 --seed 123
      gptkit plugins --all               # what is installed

    Every command has --help with examples.
    """
