"""The root ``gptkit`` group: lazy built-in commands, plugin commands, and one-line
errors (``gptkit: error: ...``, exit code 2) instead of tracebacks."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import click

from gptkit._version import __version__
from gptkit.errors import GptkitError, Interrupted

BUILTIN_COMMANDS = {
    "train": "gptkit.cli.train:train",
    "finetune": "gptkit.cli.finetune:finetune",
    "chat": "gptkit.cli.chat:chat",
    "judge": "gptkit.cli.judge:judge",
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
        """Run with one-line errors: bad input and faults of the machine (a
        full disk, too little memory) exit 2 with ``gptkit: error: ...``; a
        clean stop by a signal exits 128 + its number (Ctrl-C 130, SIGTERM
        143) with ``gptkit: ...``."""
        kwargs["standalone_mode"] = False
        try:
            rv = super().main(*args, **kwargs)
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)
        except click.exceptions.Abort:
            click.echo("gptkit: aborted", err=True)
            sys.exit(130)
        except click.ClickException as exc:
            _fail(exc.format_message(), exc.exit_code)
        except Interrupted as exc:
            _last_line(f"gptkit: {_one_line(str(exc))}", "stop")
            sys.exit(128 + int(exc.signum))
        except GptkitError as exc:
            _fail(_cli_message(exc))
        except KeyboardInterrupt:
            click.echo("gptkit: interrupted", err=True)
            sys.exit(130)
        except BrokenPipeError:
            sys.exit(0)
        except OSError as exc:  # a write or read no guard named: still one line
            from gptkit.api.failures import describe_unexpected_os_error

            _fail(describe_unexpected_os_error(exc))
        except (MemoryError, RuntimeError) as exc:
            from gptkit.api.failures import out_of_memory_message, peer_failure_message

            message = out_of_memory_message(exc)
            if message is not None:
                _fail(message)
            message = peer_failure_message(exc)
            if message is None:
                raise
            _fail(message, kind="peer")
        if isinstance(rv, int):
            sys.exit(rv)
        sys.exit(0)


def _cli_message(exc: GptkitError) -> str:
    """The error's message, naming settings by their command-line options."""
    from gptkit.errors import SettingError

    if not isinstance(exc, SettingError):
        return str(exc)
    from gptkit.api.settings import all_settings_flags

    flags = all_settings_flags()
    return exc.render(lambda name: flags.get(name, "--" + name.replace("_", "-")))


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _fail(message: str, code: int = 2, kind: str = "error") -> None:
    _last_line(f"gptkit: error: {_one_line(message)}", kind)
    sys.exit(code)


def _last_line(line: str, kind: str) -> None:
    """Print the command's last line; a worker of ``gptkit train --devices``
    writes it for the launcher instead, which says one line for the run
    (:func:`gptkit.cli.launch.exec_torchrun`).

    Under a plain ``torchrun`` (whose launcher gptkit does not control), a
    failing worker also leaves its line in torch elastic's error file, so
    torchrun's failure summary names it as the root cause instead of "To
    enable traceback see ..."; and the clean stop after a SIGTERM, which every
    rank reaches at the same step, is said by rank 0 alone."""
    directory, rank = os.environ.get("GPTKIT_RANK_MESSAGES"), os.environ.get("RANK")
    if directory and rank is not None:
        try:
            with open(os.path.join(directory, f"rank-{int(rank)}"), "w") as f:
                f.write(f"{kind}\t{line}\n")
            return
        except (OSError, ValueError):
            pass
    if rank is not None and not directory:  # a worker of a plain torchrun
        if kind == "stop" and rank != "0":
            return
        if kind != "stop":
            _elastic_error_file(line)
    click.echo(line, err=True)


def _elastic_error_file(line: str) -> None:
    """Torch elastic's error file of this worker (``TORCHELASTIC_ERROR_FILE``,
    set by torchrun): torchrun's launcher shows the line in its failure
    summary."""
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if not path:
        return
    import json
    import time

    try:
        with open(path, "w", encoding="utf-8") as f:
            # torch's own form (ErrorHandler.record_exception), with the line
            # where a traceback would be: the summary shows it as is
            info = {"py_callstack": line, "timestamp": str(int(time.time()))}
            json.dump({"message": {"message": line, "extraInfo": info}}, f)
    except OSError:
        pass  # the line is still printed


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


if __name__ == "__main__":  # python -m gptkit.cli.main, torchrun -m gptkit.cli.main
    import gptkit.cli.main as module  # the module proper, not this __main__ copy

    module.cli(prog_name="gptkit")
