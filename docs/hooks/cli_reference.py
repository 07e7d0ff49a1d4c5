"""MkDocs hook: the command-line reference is the real ``--help`` of every
command, generated when the site is built, so it cannot drift from the code.

A page holding the line ``<!-- gptkit-cli-reference -->`` gets, in its place, one
section per built-in command (plugin packages' commands are left out: they are
not part of gptkit) with the text ``gptkit COMMAND --help`` prints. Run as a
script, it prints that markdown.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

MARKER = "<!-- gptkit-cli-reference -->"
#: The help is rendered as a terminal of this many columns shows it (click
#: wraps at two columns less), the same for every reader.
COLUMNS = "80"
SRC = Path(__file__).resolve().parents[2] / "src"


def _cli():
    if str(SRC) not in sys.path:
        sys.path.insert(0, str(SRC))
    from gptkit.cli.main import cli

    return cli


@contextlib.contextmanager
def _builtins_only() -> Iterator[None]:
    """gptkit's own commands only, whatever plugins are installed: no entry
    points, and the root group without plugin commands added earlier in this
    process; everything is put back afterwards."""
    from gptkit.core.registry import reset_registry

    cli = _cli()
    saved_env = os.environ.get("GPTKIT_LOAD_PLUGINS")
    saved_commands, saved_loaded = dict(cli.commands), cli._plugins_loaded
    os.environ["GPTKIT_LOAD_PLUGINS"] = ""
    cli.commands.clear()
    cli._plugins_loaded = False
    reset_registry()
    try:
        yield
    finally:
        cli.commands.clear()
        cli.commands.update(saved_commands)
        cli._plugins_loaded = saved_loaded
        if saved_env is None:
            os.environ.pop("GPTKIT_LOAD_PLUGINS", None)
        else:
            os.environ["GPTKIT_LOAD_PLUGINS"] = saved_env
        reset_registry()


def command_paths() -> list[list[str]]:
    """Every built-in command and subcommand as its argument path
    (``[]`` is ``gptkit`` itself; ``["bench", "sampling"]`` a subcommand)."""
    import click

    with _builtins_only():
        cli = _cli()
        ctx = click.Context(cli, info_name="gptkit")
        paths: list[list[str]] = [[]]
        for name in cli.list_commands(ctx):
            command = cli.get_command(ctx, name)
            paths.append([name])
            if isinstance(command, click.Group):
                sub_ctx = click.Context(command, info_name=name, parent=ctx)
                paths += [[name, sub] for sub in command.list_commands(sub_ctx)]
        return paths


def help_text(path: list[str]) -> str:
    """What ``gptkit PATH --help`` prints (at :data:`COLUMNS` columns)."""
    from click.testing import CliRunner

    result = CliRunner().invoke(
        _cli(),
        [*path, "--help"],
        prog_name="gptkit",
        env={"COLUMNS": COLUMNS, "GPTKIT_LOAD_PLUGINS": ""},
        catch_exceptions=False,
        terminal_width=int(COLUMNS) - 2,  # CliRunner would force 80
    )
    if result.exit_code != 0:
        raise RuntimeError(f"gptkit {' '.join(path)} --help failed: {result.output}")
    return result.stdout.rstrip() + "\n"


def reference_markdown() -> str:
    """One section per command: its name as the heading, its help as text."""
    parts = []
    paths = command_paths()
    with _builtins_only():
        for path in paths:
            name = " ".join(["gptkit", *path])
            level = "##" if len(path) <= 1 else "###"
            parts.append(f"{level} `{name}`\n\n```text\n{help_text(path)}```\n")
    return "\n".join(parts)


def on_page_markdown(markdown: str, page, config, files) -> str:
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, reference_markdown())


if __name__ == "__main__":
    print(reference_markdown())
