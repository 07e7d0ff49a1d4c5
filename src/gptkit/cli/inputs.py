"""Bounded readers of what a command reads whole: standard input and prompt
files. ``gptkit generate - < /dev/zero`` or ``--prompts /dev/zero`` would read
until memory runs out; a reader here stops past :data:`MAX_INPUT_BYTES` with
one line instead."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import BinaryIO

from gptkit.errors import GptkitError

#: The most a prompt input may hold (prompts go to a context window of at most
#: thousands of tokens; a corpus belongs to ``--corpus`` or ``gptkit prepare``).
MAX_INPUT_BYTES = 16 << 20
_CHUNK = 1 << 20


def read_bounded(stream: BinaryIO, what: str, limit: int | None = None) -> str:
    """The UTF-8 text of ``stream``, refused once it passes ``limit`` bytes
    (default :data:`MAX_INPUT_BYTES`)."""
    limit = MAX_INPUT_BYTES if limit is None else limit
    parts: list[bytes] = []
    size = 0
    while True:
        chunk = stream.read(min(_CHUNK, limit + 1 - size))
        if not chunk:
            break
        parts.append(chunk)
        size += len(chunk)
        if size > limit:
            raise GptkitError(
                f"{what} holds more than {limit >> 20} MiB; prompts are read whole"
                " (train on large texts with --corpus or gptkit prepare)"
            )
    try:
        return b"".join(parts).decode("utf-8")
    except UnicodeDecodeError:
        raise GptkitError(f"{what} is not UTF-8 text") from None


def read_stdin(what: str = "standard input") -> str:
    """Standard input, bounded (see :func:`read_bounded`)."""
    return read_bounded(sys.stdin.buffer, what)


def read_file(path: Path, what: str) -> str:
    """A file's text, bounded; a missing or unreadable file is one line."""
    try:
        with open(path, "rb") as f:
            return read_bounded(f, f"{what} {path}")
    except OSError as exc:
        raise GptkitError(f"cannot read {what} {path}: {exc.strerror}") from None
