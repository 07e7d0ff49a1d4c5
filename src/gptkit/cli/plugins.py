"""``gptkit plugins``: installed plugins and the components they provide."""

from __future__ import annotations

from typing import Any

import click

from gptkit.cli.flags import echo_json


def _plugin_commands(reg: Any) -> tuple[dict[str, list[click.Command]], list[Any]]:
    """Each plugin's ``register_commands`` run against an empty probe group:
    plugin name -> the commands it adds, plus the problems met."""
    from gptkit.core.registry import PluginLoadError

    caller = reg.pm.hook.register_commands
    found: dict[str, list[click.Command]] = {}
    errors: list[Any] = []
    for info, plugin in reg.plugin_objects():
        for impl in caller.get_hookimpls():
            if impl.plugin is not plugin:
                continue
            probe = click.Group()
            try:
                impl.function(**{a: probe for a in impl.argnames if a == "cli"})
            except Exception as exc:  # a broken plugin must not break the listing
                errors.append(
                    PluginLoadError(
                        info.name,
                        info.dist,
                        f"register_commands failed: {type(exc).__name__}: {exc}",
                    )
                )
                continue
            found.setdefault(info.name, []).extend(
                probe.commands[name] for name in sorted(probe.commands)
            )
    return found, errors


def _rows(reg: Any, all_: bool) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    from gptkit.core.registry import KINDS, Registry, report_errors

    commands, command_errors = _plugin_commands(reg)
    if command_errors:  # reported like load errors (fatal in strict mode)
        probe = Registry(reg.pm)
        probe.errors = command_errors
        report_errors(probe)
    rows = []
    for info in sorted(reg.plugins, key=lambda i: (not i.builtin, i.name)):
        if info.builtin and not all_:
            continue
        components = [
            {
                "kind": KINDS[kind][2],
                "name": name,
                "summary": reg.kind(kind).entries[name].summary,
            }
            for kind, names in info.provides.items()
            for name in names
        ]
        provides = {kind: list(names) for kind, names in info.provides.items()}
        plugin_commands = commands.get(info.name, [])
        if plugin_commands:
            provides["commands"] = [c.name for c in plugin_commands]
            components += [
                {
                    "kind": "command",
                    "name": c.name,
                    "summary": c.get_short_help_str(limit=80),
                }
                for c in plugin_commands
            ]
        rows.append(
            {
                "name": info.name,
                "distribution": info.dist,
                "version": info.version,
                "builtin": info.builtin,
                "hooks": info.hooks,
                "provides": provides,
                "components": components,
            }
        )
    errors = [
        {"plugin": e.plugin, "distribution": e.dist, "error": e.message}
        for e in [*reg.errors, *command_errors]
    ]
    return rows, errors


def _echo_table(rows: list[dict[str, Any]], errors: list[dict[str, Any]]) -> None:
    components = [c for row in rows for c in row["components"]]
    kind_width = max((len(c["kind"]) for c in components), default=0)
    name_width = max((len(c["name"]) for c in components), default=0)
    for i, row in enumerate(rows):
        if i:
            click.echo()
        where = " ".join(p for p in (row["distribution"], row["version"]) if p)
        tail = " (built-in)" if row["builtin"] else ""
        click.echo(f"{row['name']}: {where or 'unknown distribution'}{tail}")
        click.echo(f"  hooks: {', '.join(row['hooks']) or '(none)'}")
        for c in row["components"]:
            click.echo(
                f"  {c['kind']:<{kind_width}}  {c['name']:<{name_width}}"
                f"  {c['summary']}".rstrip()
            )
    if errors:
        if rows:
            click.echo()
        click.echo("errors:")
        for e in errors:
            where = e["plugin"] + (
                f" ({e['distribution']})" if e["distribution"] else ""
            )
            click.echo(f"  {where}: {e['error']}")


@click.command()
@click.option("--all", "all_", is_flag=True, help="Include the built-in plugins.")
@click.option("--json", "json_", is_flag=True, help="Print JSON.")
def plugins(all_: bool, json_: bool) -> None:
    """List installed plugins, their hooks and the components they provide.

    For each plugin: its entry-point name, distribution and version, the hooks
    it implements, and every sampler, scheduler, weight loader, logger, corpus,
    quantizer and command it adds. Problems (a plugin that fails to import, a duplicate
    component name) are listed under "errors" and skipped.
    GPTKIT_LOAD_PLUGINS=dist1,dist2 loads only those distributions (empty:
    none); GPTKIT_STRICT_PLUGINS=1 makes problems fatal. Writing plugins:
    docs/plugins.md.

    \b
    Examples:
      gptkit plugins
      gptkit plugins --all --json
      GPTKIT_LOAD_PLUGINS= gptkit plugins --all    # the built-ins only
    """
    from gptkit.core.registry import get_registry

    rows, errors = _rows(get_registry(), all_)
    if json_:
        echo_json({"plugins": rows, "errors": errors})
        return
    if not rows:
        click.echo(
            "No plugins installed" + ("." if all_ else " (--all shows the built-ins).")
        )
    _echo_table(rows, errors)
