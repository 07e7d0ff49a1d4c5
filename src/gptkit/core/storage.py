"""Writing files so that a crash never leaves a half-written one (torch-free).

Every file gptkit writes whole (configs, plots' data, prepared corpora, exported
weights' metadata) goes through :func:`atomic_write`: the bytes go to a hidden
temporary sibling, are fsynced, and the temporary file is renamed over the
target, so a reader sees the old file or the new one, never a mix (the
approach of SQLite's rollback journal and Git's lock files: write aside, then
rename). Directories of several files (checkpoints, exports) use the same idea
one level up, with :func:`fsync_file` and :func:`fsync_dir`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


def fsync_file(path: Path) -> None:
    """Flush a written file's data to the disk."""
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def fsync_dir(path: Path) -> None:
    """Flush a directory's entries (a rename in it) to the disk, where the
    platform allows it (not on Windows, nor on some network file systems)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def default_file_mode() -> int:
    """The mode a new file gets under the current umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def temporary_sibling(path: Path) -> Path:
    """The hidden temporary name next to ``path`` that a writer fills first."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


@contextmanager
def atomic_open(path: Path, mode: str = "w", **kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temporary sibling of ``path`` for writing; on a clean exit it is
    flushed, fsynced and renamed over ``path``. On an error the temporary file
    is removed and ``path`` is left as it was."""
    if not any(c in mode for c in "wx"):
        raise ValueError(f"atomic_open writes a new file; mode {mode!r}")
    if "b" not in mode:
        kwargs.setdefault("encoding", "utf-8")
    tmp = temporary_sibling(path)
    try:
        with open(tmp, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write(path: Path, data: bytes | str) -> None:
    """Replace ``path`` with ``data`` atomically (bytes, or text as UTF-8)."""
    with atomic_open(path, "wb") as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)


def write_json_atomic(path: Path, data: Any) -> None:
    """Replace ``path`` with ``data`` as indented JSON, atomically."""
    atomic_write(path, json.dumps(data, indent=2) + "\n")
