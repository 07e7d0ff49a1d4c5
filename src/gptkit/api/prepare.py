"""``gptkit.prepare``: corpora tokenized once into a memory-mapped token file
(:mod:`gptkit.formats.prepared`), the library side of ``gptkit prepare``."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from gptkit.core.settings import Settings, setting
from gptkit.errors import SettingError


@dataclass
class PrepareSettings(Settings):
    """Everything ``gptkit prepare`` / :func:`gptkit.prepare` takes (but the
    corpora)."""

    out: str | None = setting(
        None, help="Directory of the prepared corpus (meta.json + tokens.bin)."
    )
    train_ratio: float = setting(
        0.9,
        gt=0.0,
        lt=1.0,
        help="Share of the tokens used for training; the rest is validation.",
    )
    workers: int | None = setting(
        None,
        ge=1,
        help="Tokenizer processes.",
        default_help="the CPUs available",
    )
    shard_mb: float = setting(
        4.0, gt=0.0, help="Size of the pieces the input files are cut into (MiB)."
    )
    progress: bool = setting(True, help="Show a progress bar on stderr.")

    def check(self) -> None:
        if not self.out:
            raise SettingError("{out} is required (the prepared corpus's directory)")


def available_cpus() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def prepare(
    corpora: Sequence[str],
    settings: PrepareSettings | None = None,
    /,
    *,
    message: Callable[[str], None] = print,
    **kwargs: Any,
) -> dict[str, Any]:
    """Tokenize ``corpora`` (files, directories, globs, corpus plugin names) into
    the prepared corpus ``out``; returns its metadata. An interrupted
    preparation continues when run again with the same inputs."""
    from pathlib import Path

    from gptkit.formats.prepared import prepare as write_prepared

    settings = settings or PrepareSettings.create(kwargs)
    return write_prepared(
        corpora,
        Path(str(settings.out)),
        train_ratio=settings.train_ratio,
        workers=settings.workers or available_cpus(),
        shard_bytes=max(1, int(settings.shard_mb * (1 << 20))),
        progress=settings.progress,
        message=message,
    )
