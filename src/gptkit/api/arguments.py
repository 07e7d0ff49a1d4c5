"""The positional arguments of the Python API, checked as settings are: a value
of the wrong kind is a :class:`~gptkit.errors.GptkitError` naming the
argument, never a ``TypeError`` from deep inside (``lm.generate(None)``,
``Run.open(None)``)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gptkit.errors import GptkitError, SettingError


def _kind(value: Any) -> str:
    return type(value).__name__


def text(value: Any, name: str) -> str:
    """``value`` as a text argument: a ``str`` that is valid Unicode (a lone
    surrogate such as ``"\\ud800"`` cannot be encoded)."""
    if not isinstance(value, str):
        raise SettingError(f"{{{name}}} must be a string, not {_kind(value)}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise SettingError(
            f"{{{name}}} is not valid Unicode text (a lone surrogate"
            f" U+{ord(value[exc.start]):04X} at character {exc.start})"
        ) from None
    return value


def prompts(value: Any) -> list[str]:
    """A prompt or a list of prompts, as a non-empty list of strings."""
    if isinstance(value, str):
        return [text(value, "prompt")]
    if not isinstance(value, Sequence) or isinstance(value, bytes | bytearray):
        raise SettingError(
            f"{{prompt}} must be a string or a list of strings, not {_kind(value)}"
        )
    if not value:
        raise SettingError("{prompt} is an empty list; give at least one prompt")
    return [text(p, "prompt") for p in value]


def token_ids(value: Any, vocab_size: int) -> list[int]:
    """A sequence of token ids, each in ``range(vocab_size)``."""
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise SettingError(f"{{ids}} must be a list of token ids, not {_kind(value)}")
    out = []
    for i in value:
        if isinstance(i, bool) or not isinstance(i, int):
            raise SettingError(f"{{ids}} holds {i!r}, not a token id")
        if not 0 <= i < vocab_size:
            raise SettingError(
                f"{{ids}} holds {i}, outside the vocabulary (0..{vocab_size - 1})"
            )
        out.append(int(i))
    return out


def directory(value: Any, name: str) -> Path:
    """A path argument (``str`` or ``os.PathLike``)."""
    if isinstance(value, str | os.PathLike) and str(value) != "":
        return Path(value)
    raise GptkitError(f"{name} must be a directory path, not {value!r}")
