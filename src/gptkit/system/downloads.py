"""Files gptkit downloads once and keeps in its cache, checked by sha256
(torch-free): the book's texts and data sets."""

from __future__ import annotations

import hashlib
import os
import urllib.request
from pathlib import Path

from gptkit.errors import GptkitError


def cache_dir() -> Path:
    """``$GPTKIT_CACHE_DIR``, else the platform's user cache dir for gptkit."""
    env = os.environ.get("GPTKIT_CACHE_DIR")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_cache_dir("gptkit"))


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def cached_download(url: str, digest: str, path: Path, *, what: str, hint: str) -> Path:
    """``path``, downloaded from ``url`` first unless it is there with the
    sha256 ``digest``. A download that does not match is not saved; a failed
    one is a one-line error ending with ``hint`` (how to work offline)."""
    from gptkit.system.storage import atomic_write

    if path.is_file() and sha256(path.read_bytes()) == digest:
        return path
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            data = response.read()
    except OSError as exc:
        raise GptkitError(f"cannot download {what} ({exc}); {hint}") from None
    if sha256(data) != digest:
        raise GptkitError(f"the {what} download does not match its sha256; not saved")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, data)
    return path
