"""``gptkit plugins``: installed plugins and the components they provide."""

from __future__ import annotations

import click

from gptkit.cli.options import echo_json


@click.command()
@click.option("--all", "all_", is_flag=True, help="Include the built-in plugins.")
@click.option("--json", "json_", is_flag=True, help="Print JSON.")
def plugins(all_: bool, json_: bool) -> None:
    """List installed plugins, their hooks and the components they provide.

    Problems (a plugin that fails to import, a duplicate component name) are
    listed under "errors"; GPTKIT_LOAD_PLUGINS=name1,name2 loads only those
    distributions (empty: none), GPTKIT_STRICT_PLUGINS=1 makes problems fatal.

    \b
    Examples:
      gptkit plugins
      gptkit plugins --all --json
    """
    from gptkit.core.registry import get_registry

    reg = get_registry()
    rows = [
        {
            "name": info.name,
            "distribution": info.dist,
            "version": info.version,
            "builtin": info.builtin,
            "hooks": info.hooks,
            "provides": info.provides,
        }
        for info in sorted(reg.plugins, key=lambda i: i.name)
        if all_ or not info.builtin
    ]
    errors = [
        {"plugin": e.plugin, "distribution": e.dist, "error": e.message}
        for e in reg.errors
    ]
    if json_:
        echo_json({"plugins": rows, "errors": errors})
        return
    if not rows:
        click.echo(
            "No plugins installed" + ("" if all_ else " (--all shows the built-ins).")
        )
    for row in rows:
        dist = f"{row['distribution']} {row['version'] or ''}".strip()
        click.echo(f"{row['name']}  [{dist}]")
        for kind, names in row["provides"].items():
            click.echo(f"    {kind}: {', '.join(names)}")
        if row["hooks"] and not row["provides"]:
            click.echo(f"    hooks: {', '.join(row['hooks'])}")
    for error in errors:
        where = error["plugin"] + (
            f" ({error['distribution']})" if error["distribution"] else ""
        )
        click.echo(f"error: {where}: {error['error']}")
