"""Text corpora read for training and evaluation: each spec a registered corpus
plugin's name or a file, directory or glob (the ``files`` corpus), their
documents joined with the tokenizer's end-of-sequence token."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from gptkit.core.tokenizer import ENDOFTEXT, Tokenizer
from gptkit.errors import GptkitError, SettingError


def resolve_corpora(specs: Sequence[str]) -> list[tuple[str, object]]:
    """Each spec is a registered corpus name or a path/glob (the ``files`` corpus)."""
    from gptkit.core.registry import get_registry

    corpora = get_registry().corpora
    out = []
    for spec in specs:
        if spec in corpora:
            out.append((spec, corpora.create(spec)))
            continue
        if not any(c in spec for c in "*?[") and not _exists(Path(spec)):
            if "/" in spec or os.sep in spec or Path(spec).suffix:
                raise GptkitError(f"corpus file not found: {spec}")
            raise GptkitError(
                f"unknown corpus {spec!r}: neither a corpus name nor an existing"
                f" file or directory (corpora: {', '.join(corpora.names())})"
            )
        out.append((spec, corpora.create("files", paths=(spec,))))
    return out


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:  # a name too long, ...: reported as not found
        return False


def load_text(specs: Sequence[str], tokenizer: Tokenizer | None = None) -> str:
    """All documents of all corpora, joined with ``<|endoftext|>`` (the
    tokenizer's end-of-sequence token)."""
    return load_corpora(specs, tokenizer)[0]


def load_corpora(
    specs: Sequence[str], tokenizer: Tokenizer | None = None
) -> tuple[str, str]:
    """(text, sample prompt): the joined documents and the first corpus's
    suggested prompt for per-epoch samples. Documents are separated by the
    tokenizer's end-of-sequence token (GPT-2's ``<|endoftext|>`` by default)."""
    if not specs:
        raise SettingError("give at least one {corpus}")
    docs: list[str] = []
    resolved = resolve_corpora(specs)
    for _, corpus in resolved:
        docs.extend(corpus.documents())  # type: ignore[attr-defined]
    if not docs or not any(d.strip() for d in docs):
        raise GptkitError(f"corpus {', '.join(specs)} is empty")
    separator = ENDOFTEXT if tokenizer is None else tokenizer.separator
    return separator.join(docs), resolved[0][1].sample_prompt  # type: ignore[attr-defined]
