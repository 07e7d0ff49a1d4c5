"""Built-in corpora: Python's own help topics, the book's text, local files."""

from __future__ import annotations

import glob
import hashlib
import os
import re
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from gptkit.core.interfaces import Corpus
from gptkit.errors import GptkitError
from gptkit.system.storage import atomic_write

VERDICT_URL = (
    "https://raw.githubusercontent.com/rasbt/LLMs-from-scratch/main/"
    "ch02/01_main-chapter-code/the-verdict.txt"
)
VERDICT_SHA256 = "b41e41a68f0398a3154ae69e2e4c0e2694e17fe0d66730536837f1b01935b31f"


def cache_dir() -> Path:
    """``$GPTKIT_CACHE_DIR``, else the platform's user cache dir for gptkit."""
    env = os.environ.get("GPTKIT_CACHE_DIR")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_cache_dir("gptkit"))


def read_text(path: Path) -> str:
    """A UTF-8 text file's content, or a one-line error saying what is wrong."""
    if not path.exists():
        raise GptkitError(f"corpus file not found: {path}")
    if not path.is_file():
        raise GptkitError(f"corpus path is not a file: {path}")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise GptkitError(
            f"{path} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset"
            f" {exc.start}); convert it, e.g. with iconv -t utf-8"
        ) from None
    if not text.strip():
        raise GptkitError(f"corpus file is empty: {path}")
    return text.removeprefix("\ufeff")


_UNDERLINE = re.compile(r"^([*=\-~^])\1{2,}$")


def tidy_whitespace(text: str) -> str:
    """Reflow the text into one line per paragraph: strip indentation, join
    wrapped lines, collapse runs of spaces, drop heading underlines. GPT-2's BPE
    spends a token on every space of indentation and every line break, so raw
    pydoc text is about a quarter whitespace tokens, and a small model learns
    little but "a space follows a space"."""
    paragraphs = []
    for block in re.split(r"\n\s*\n", text):
        lines = [line.strip() for line in block.splitlines()]
        lines = [line for line in lines if line and not _UNDERLINE.match(line)]
        if lines:
            paragraphs.append(re.sub(r"\s{2,}", " ", " ".join(lines)))
    return "\n\n".join(paragraphs)


class PythonDocs(Corpus):
    """The ``pydoc_data.topics`` help texts (about 465k characters), one
    document per topic in sorted order: the default corpus, always available.
    Whitespace is tidied (see :func:`tidy_whitespace`) unless ``raw=true``."""

    name = "python-docs"
    summary = "CPython's help topics (pydoc_data), shipped with Python: no download."
    sample_prompt = "The function returns"

    @dataclass(frozen=True)
    class Options:
        raw: bool = field(
            default=False, metadata={"help": "keep the original indentation"}
        )

    def documents(self) -> Iterator[str]:
        try:
            from pydoc_data.topics import topics
        except ImportError:  # some distributions strip it
            raise GptkitError(
                "this Python has no pydoc_data module; use --corpus PATH instead"
            ) from None
        for key in sorted(topics):
            yield topics[key] if self.options.raw else tidy_whitespace(topics[key])


class TheVerdict(Corpus):
    """Edith Wharton's "The Verdict" (1908), the book's training text. Downloaded
    once from the book's repository into the gptkit cache, sha256-checked."""

    name = "the-verdict"
    summary = "Edith Wharton's 'The Verdict', the book's chapter 5 text (downloaded)."

    def path(self) -> Path:
        return cache_dir() / "corpora" / "the-verdict.txt"

    def documents(self) -> Iterator[str]:
        path = self.path()
        if not path.exists() or _sha256(path.read_bytes()) != VERDICT_SHA256:
            self._download(path)
        yield read_text(path)

    def _download(self, path: Path) -> None:
        try:
            with urllib.request.urlopen(VERDICT_URL, timeout=30) as response:
                data = response.read()
        except OSError as exc:
            raise GptkitError(
                f"cannot download the-verdict ({exc}); save the text as {path}"
                " or pass its path to --corpus"
            ) from None
        if _sha256(data) != VERDICT_SHA256:
            raise GptkitError(
                "the-verdict download does not match its sha256; not saved"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, data)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Files(Corpus):
    """Local UTF-8 text: each path is a file, a directory (its ``*.txt`` files,
    recursively, sorted) or a glob pattern. One document per file."""

    name = "files"
    summary = "Local UTF-8 text: files, directories (*.txt inside) or glob patterns."

    @dataclass(frozen=True)
    class Options:
        paths: tuple[str, ...] = field(
            default=(),
            metadata={"help": "files, directories or globs (comma-separated)"},
        )

        def validate(self) -> None:
            if not self.paths:
                raise ValueError("give at least one path")

    def files(self) -> list[Path]:
        found: list[Path] = []
        for spec in self.options.paths:
            path = Path(spec).expanduser()
            if path.is_dir():
                matches = sorted(p for p in path.rglob("*.txt") if p.is_file())
                if not matches:
                    raise GptkitError(f"corpus directory has no *.txt files: {path}")
                found.extend(matches)
            elif glob.has_magic(spec):
                matches = sorted(Path(p) for p in glob.glob(spec, recursive=True))
                if not matches:
                    raise GptkitError(f"no corpus files match {spec!r}")
                found.extend(p for p in matches if p.is_file())
            else:
                found.append(path)
        return found

    def documents(self) -> Iterator[str]:
        for path in self.files():
            yield read_text(path)
