"""Reading a prepared corpus (written by :mod:`gptkit.formats.prepared`):
``meta.json`` checked, ``tokens.bin`` memory-mapped as uint16 ids."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from gptkit.errors import GptkitError, SettingError

FORMAT = "gptkit-tokens"
VERSION = 1
META = "meta.json"
TOKENS = "tokens.bin"
WORK = ".work"


def read_meta(directory: Path) -> dict[str, Any]:
    """The metadata of a prepared corpus, or a one-line error saying what is
    wrong with ``directory``."""
    path = directory / META
    if not directory.is_dir():
        raise SettingError(f"{{data}} {directory}: no such directory")
    if not path.is_file():
        hint = (
            " (its preparation did not finish; rerun gptkit prepare to complete it)"
            if (directory / WORK).is_dir()
            else ""
        )
        raise GptkitError(
            f"{directory} is not a prepared corpus: it has no {META}{hint};"
            f" make one with: gptkit prepare CORPUS... --out {directory}"
        )
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GptkitError(f"corrupt {path}: {exc}") from None
    required = ("tokens", "train_tokens", "tokens_file", "dtype")
    if (
        not isinstance(meta, dict)
        or meta.get("format") != FORMAT
        or not all(k in meta for k in required)
    ):
        raise GptkitError(f"{path} is not a gptkit prepared-corpus {META}")
    if meta.get("version") != VERSION or meta["dtype"] != "uint16":
        raise GptkitError(
            f"{path}: unsupported format version {meta.get('version')} /"
            f" dtype {meta['dtype']}"
        )
    return meta


def open_tokens(directory: Path, meta: dict[str, Any]) -> np.ndarray:
    """The token file as a read-only ``np.memmap`` (nothing is read yet)."""
    path = directory / str(meta["tokens_file"])
    tokens = int(meta["tokens"])
    if not path.is_file():
        raise GptkitError(f"{directory}: {META} names {path.name}, which is missing")
    size = path.stat().st_size
    if size != 2 * tokens:
        raise GptkitError(
            f"{path} has {size} bytes but {META} says {tokens} tokens of 2 bytes;"
            " the prepared corpus is incomplete or corrupt"
        )
    if tokens == 0:
        raise GptkitError(f"{directory} holds no tokens")
    return np.memmap(path, dtype=np.uint16, mode="r", shape=(tokens,))
