"""The layer diagram of docs/architecture.md, drawn from the import contract in
pyproject.toml (``[tool.importlinter]``), so the picture cannot drift from the
rule CI checks.

As a MkDocs hook (``hooks:`` in mkdocs.yml) it replaces the ``<!-- layers -->``
marker of a page with the Mermaid diagram; ``python docs/hooks/layers.py`` prints
the diagram.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parents[2]
MARKER = "<!-- layers -->"


def contract_layers(pyproject: Path = ROOT / "pyproject.toml") -> list[list[str]]:
    """The layers of the ``layers`` contract, top first; each a list of
    sibling packages (``"cli"``, ``["runs", "plugins"]``, ...)."""
    config = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    contracts = config["tool"]["importlinter"]["contracts"]
    layers = next(c for c in contracts if c.get("id") == "layers")["layers"]
    return [[part.strip() for part in layer.split("|")] for layer in layers]


def mermaid(layers: list[list[str]]) -> str:
    """A top-down Mermaid flowchart: one row per layer, an arrow from each
    layer to the one below it (a layer may import every layer below)."""
    lines = ["```mermaid", "flowchart TD"]
    for i, siblings in enumerate(layers):
        lines.append(f'    subgraph L{i}[" "]')
        lines.append("        direction LR")
        for name in siblings:
            lines.append(f'        {name}["gptkit.{name}"]')
        lines.append("    end")
    for i in range(len(layers) - 1):
        lines.append(f"    L{i} --> L{i + 1}")
    lines.append("```")
    return "\n".join(lines)


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    """MkDocs hook: the marker becomes the diagram."""
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, mermaid(contract_layers()))


if __name__ == "__main__":
    sys.stdout.write(mermaid(contract_layers()) + "\n")
