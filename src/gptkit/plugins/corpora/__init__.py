"""Built-in corpora."""

from __future__ import annotations

from gptkit import hookimpl


@hookimpl
def register_corpora() -> list[str]:
    return [
        "gptkit.plugins.corpora.texts:PythonDocs",
        "gptkit.plugins.corpora.texts:TheVerdict",
        "gptkit.plugins.corpora.texts:Files",
    ]
