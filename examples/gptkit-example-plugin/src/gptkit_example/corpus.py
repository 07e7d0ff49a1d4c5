"""A corpus shipped inside the package as package data (no download).

Three public-domain texts of the United States: the Declaration of Independence
(1776), Lincoln's Gettysburg Address (1863, the Bliss copy) and his Second
Inaugural Address (1865), about 13,700 characters in all. The files live in
``gptkit_example/texts/`` and are read with :mod:`importlib.resources`, so the
corpus works from a wheel, a zip or an editable install alike.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources

from gptkit.core.interfaces import Corpus

#: document name -> file in gptkit_example/texts, in the corpus's order.
DOCUMENTS = {
    "declaration": "declaration-of-independence.txt",
    "gettysburg": "gettysburg-address.txt",
    "second-inaugural": "second-inaugural-address.txt",
}


def read_document(name: str) -> str:
    """The text of one document (``declaration``, ``gettysburg``, ...)."""
    path = resources.files("gptkit_example") / "texts" / DOCUMENTS[name]
    return path.read_text(encoding="utf-8")


class UsDocuments(Corpus):
    """One document per text; ``-o only=gettysburg`` picks one."""

    name = "us-documents"
    summary = (
        "The Declaration of Independence and two Lincoln speeches (public domain)."
    )
    sample_prompt = "We hold these truths"

    @dataclass(frozen=True)
    class Options:
        only: str | None = field(
            default=None,
            metadata={
                "help": "use only this document (default: all three)",
                "choices": tuple(DOCUMENTS),
            },
        )

    def documents(self) -> Iterator[str]:
        names = [self.options.only] if self.options.only else list(DOCUMENTS)
        for name in names:
            yield read_document(name)
