"""Built-in corpora."""

from __future__ import annotations

from gptkit import hookimpl
from gptkit.core.interfaces import Component

_MODULE = "gptkit.plugins.corpora.texts"


@hookimpl
def register_corpora() -> list[Component]:
    return [
        Component(
            "python-docs",
            f"{_MODULE}:PythonDocs",
            "CPython's help topics (pydoc_data), shipped with Python: no download.",
        ),
        Component(
            "the-verdict",
            f"{_MODULE}:TheVerdict",
            "Edith Wharton's 'The Verdict', the book's chapter 5 text (downloaded).",
        ),
        Component(
            "files",
            f"{_MODULE}:Files",
            "Local UTF-8 text: files, directories (*.txt inside) or glob patterns.",
        ),
    ]
