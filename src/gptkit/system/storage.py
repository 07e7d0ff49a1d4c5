"""Writing files so that a crash never leaves a half-written one, and a failed
write is one clear line (torch-free).

Every file gptkit writes whole (configs, plots' data, prepared corpora, exported
weights' metadata) goes through :func:`atomic_write`: the bytes go to a hidden
temporary sibling, are fsynced, and the temporary file is renamed over the
target, so a reader sees the old file or the new one, never a mix (the
approach of SQLite's rollback journal and Git's lock files: write aside, then
rename). Directories of several files (checkpoints, exports) use the same idea
one level up, with :func:`fsync_file` and :func:`fsync_dir`. Files that grow
(``metrics.jsonl``) are appended through :class:`AppendFile`.

A write that fails — a full disk, a read-only file system, a missing
permission, a name that is too long, a path through a regular file — raises
:class:`StorageError`: an ``OSError`` (its ``errno`` and ``filename`` kept)
that is also a :class:`~gptkit.errors.GptkitError`, whose message names the
path and the cause, so the command line prints it as one line.
:func:`guarded` turns the errors of any block into one; it also recognises the
errors of writers that wrap the OS's (safetensors' ``... (os error 28)``, or a
``torch.save`` whose file object failed).
"""

from __future__ import annotations

import errno
import io
import json
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from gptkit.errors import GptkitError

#: What to do about each cause, after the OS's own words for it.
_HINTS = {
    errno.ENOSPC: "free some space",
    errno.EDQUOT: "free some space (disk quota)",
    errno.EROFS: "the file system is read-only; choose a writable location",
    errno.EACCES: "choose a location you may write to",
    errno.EPERM: "choose a location you may write to",
    errno.ENAMETOOLONG: "choose a shorter name",
    errno.EFBIG: "the file size limit (ulimit -f) is reached",
    errno.EIO: "the disk or network file system failed",
}
_RUST_OS_ERROR = re.compile(r"\(os error (\d+)\)")


class StorageError(GptkitError, OSError):
    """A file operation failed: ``errno`` and ``filename`` as in ``OSError``,
    and a one-line message naming the path, the cause and what to do."""

    def __init__(self, message: str, code: int | None, path: str | None) -> None:
        OSError.__init__(self, code, os.strerror(code) if code else message, path)
        self.message = message

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[Any, ...]:  # picklable (DDP, multiprocessing)
        return (type(self), (self.message, self.errno, self.filename))


def find_os_error(exc: BaseException) -> OSError | None:
    """The ``OSError`` behind ``exc``: itself, one it was raised from or during,
    or one a Rust library reports as ``(os error N)`` (safetensors)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno is not None:
            return current
        current = current.__cause__ or current.__context__
    match = _RUST_OS_ERROR.search(str(exc))
    if match:
        code = int(match.group(1))
        return OSError(code, os.strerror(code))
    return None


def _blocking_file(path: Path) -> Path | None:
    """The first of ``path``'s ancestors (or itself) that exists and is not a
    directory."""
    for parent in [*reversed(path.parents), path]:
        try:
            if parent.exists() and not parent.is_dir():
                return parent
        except OSError:
            return None
    return None


def describe_os_error(exc: OSError, path: str | Path, action: str = "write") -> str:
    """The cause of ``exc`` in words, and what to do about it: ``no space left
    on device; free some space``."""
    code = exc.errno
    cause = (os.strerror(code) if code else str(exc)) or type(exc).__name__
    cause = cause[0].lower() + cause[1:]
    hint = _HINTS.get(code or 0)
    if code in (errno.ENOTDIR, errno.EEXIST):
        blocker = _blocking_file(Path(path))
        if blocker is not None:
            hint = f"{blocker} is a file, not a directory"
    elif code == errno.ENOENT and action != "read":
        hint = "a directory on the way is missing"
    elif code in (errno.EACCES, errno.EPERM) and action == "read":
        hint = "check its permissions"
    return cause + (f"; {hint}" if hint else "")


def storage_error(
    exc: OSError, path: str | Path, action: str = "write"
) -> StorageError:
    """A :class:`StorageError` for ``exc`` met while doing ``action`` on
    ``path`` (the error's own file name wins when it names another file)."""
    if isinstance(exc, StorageError):
        return exc
    target = Path(path)
    if exc.filename and Path(os.fsdecode(exc.filename)) != target:
        named = Path(os.fsdecode(exc.filename))
        if not named.name.startswith(".") or named.parent != target.parent:
            # (a hidden temporary sibling is reported as its target)
            if target not in named.parents:
                action = "access"  # another file than the one being written
            target = named
    message = f"cannot {action} {target}: {describe_os_error(exc, target, action)}"
    return StorageError(message, exc.errno, str(target))


@contextmanager
def guarded(path: str | Path, action: str = "write") -> Iterator[None]:
    """Turn an ``OSError`` (or a library error caused by one) raised in the
    block into a :class:`StorageError` about ``path``."""
    try:
        yield
    except GptkitError:
        raise
    except Exception as exc:
        found = find_os_error(exc)
        if found is None:
            raise
        raise storage_error(found, path, action) from None


def ensure_dir(path: Path) -> Path:
    """Create ``path`` and its parents (fine if it exists); errors name it."""
    with guarded(path, "create directory"):
        path.mkdir(parents=True, exist_ok=True)
    return path


def fsync_file(path: Path) -> None:
    """Flush a written file's data to the disk."""
    with guarded(path), open(path, "rb+") as f:
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
    is removed and ``path`` is left as it was; an ``OSError`` becomes a
    :class:`StorageError` about ``path``."""
    if not any(c in mode for c in "wx"):
        raise ValueError(f"atomic_open writes a new file; mode {mode!r}")
    if "b" not in mode:
        kwargs.setdefault("encoding", "utf-8")
    tmp = temporary_sibling(path)
    with guarded(path):
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


class _WholeWriter(io.RawIOBase):
    """A binary file whose ``write`` writes everything or raises: a short
    write (the last bytes before a full disk) is retried, so the ``OSError``
    with its ``errno`` surfaces instead of a short count that a C++ writer
    reports without a cause."""

    def __init__(self, raw: io.FileIO) -> None:
        self._raw = raw
        self.error: OSError | None = None

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        total = len(view)
        try:
            while view:
                written = self._raw.write(view)
                view = view[written or 0 :]
        except OSError as exc:
            self.error = self.error or exc
            raise
        return total

    def fileno(self) -> int:
        return self._raw.fileno()


def write_stream(path: Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Create ``path`` and let ``write(file)`` fill it (``torch.save(obj, f)``);
    the data is fsynced. A failure of the disk is a :class:`StorageError` even
    when the library that wrote reports it as its own error."""
    with guarded(path):
        with open(path, "wb", buffering=0) as raw:
            writer = _WholeWriter(raw)
            buffered = io.BufferedWriter(writer, 1 << 20)
            try:
                write(buffered)
                buffered.flush()
            except Exception as exc:
                if writer.error is not None:
                    raise writer.error from exc
                raise
            os.fsync(raw.fileno())


class AppendFile:
    """A text file that grows line by line (``metrics.jsonl``): every line is
    flushed, and an ``OSError`` is a :class:`StorageError` naming the file."""

    def __init__(self, path: Path, *, append: bool, newline: str | None = None) -> None:
        self.path = path
        self._failed = False
        with guarded(path):
            self._file: IO[str] | None = open(
                path, "a" if append else "w", encoding="utf-8", newline=newline
            )

    def write(self, text: str) -> int:
        if self._file is None:
            raise ValueError(f"{self.path} is closed")
        try:
            with guarded(self.path):
                written = self._file.write(text)
                self._file.flush()
        except StorageError:
            self._failed = True
            raise
        return written

    def close(self) -> None:
        """Close the file; after a failed write, quietly (that failure was
        already reported, and its bytes cannot be written now either)."""
        if self._file is None:
            return
        file, self._file = self._file, None
        try:
            with guarded(self.path):
                file.close()
        except StorageError:
            if not self._failed:
                raise
