"""An exclusive lock on a run directory, held by the one process that writes it
(torch-free).

``gptkit train --out DIR`` and ``--resume DIR`` hold it for the whole run, so
a second writer is refused at once with one line naming the holder, instead of
two runs interleaving their metrics and checkpoints.

The lock is an OS file lock (``flock`` on POSIX, ``msvcrt.locking`` on
Windows) on ``DIR/.gptkit.lock``, not the file's existence: the kernel drops it
when the holder dies, ``kill -9`` included, so a lock left by a dead process
is free for the next writer, which takes it over and says so. The file holds
the holder's PID, host, command and start time, for the message the next
writer gets. We use the OS lock directly rather than the ``filelock`` package
because filelock truncates the lock file on every attempt to take it, which
would erase the holder's details that the refusal names.

On a file system without locks (some network mounts answer ``ENOLCK``), the
lock falls back to creating the file exclusively, as Git does with its
``.lock`` files; a leftover file of a process that is gone from this host is
taken over, and one from another host is refused with instructions.
"""

from __future__ import annotations

import datetime as _dt
import errno
import json
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from gptkit.errors import GptkitError
from gptkit.system.storage import ensure_dir, fsync_dir, guarded

LOCK_FILE = ".gptkit.lock"
#: errno values of a file system that does not implement locks.
_NO_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}
# On Windows the locked byte lies past the holder's details, which stay readable.
_WINDOWS_LOCK_OFFSET = 1 << 20


class RunDirLocked(GptkitError):
    """Another process holds the run directory's lock."""

    def __init__(self, message: str, holder: Holder | None) -> None:
        super().__init__(message)
        self.holder = holder


@dataclass(frozen=True)
class Holder:
    """Who holds (or held) a lock: read from the lock file."""

    pid: int | None = None
    host: str | None = None
    command: str | None = None
    since: str | None = None

    @classmethod
    def parse(cls, text: str) -> Holder | None:
        try:
            data = json.loads(text)
        except ValueError:
            return None
        if not isinstance(data, dict):
            return None
        pid = data.get("pid")
        return cls(
            pid=pid if isinstance(pid, int) else None,
            host=str(data["host"]) if "host" in data else None,
            command=str(data["command"]) if "command" in data else None,
            since=str(data["since"]) if "since" in data else None,
        )

    def describe(self) -> str:
        """``process 1234 (gptkit train ..., since 2026-01-02 10:00:00)``."""
        if self.pid is None:
            return "another process"
        who = f"process {self.pid}"
        if self.host and self.host != socket.gethostname():
            who += f" on {self.host}"
        elif self.pid == os.getpid():
            who = f"this process ({self.pid})"
        details = [d for d in (self.command, self.since and f"since {self.since}") if d]
        return who + (f" ({', '.join(details)})" if details else "")

    def alive(self) -> bool | None:
        """Whether the holder still runs (None: another host, cannot tell)."""
        if self.pid is None or (self.host and self.host != socket.gethostname()):
            return None
        return _pid_alive(self.pid)


def _pid_alive(pid: int) -> bool:
    if sys.platform == "win32":  # os.kill(pid, 0) would terminate it there
        import ctypes

        handle = ctypes.windll.kernel32.OpenProcess(0x1000, False, pid)  # type: ignore[attr-defined]
        if handle:
            ctypes.windll.kernel32.CloseHandle(handle)  # type: ignore[attr-defined]
        return bool(handle)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, owned by someone else
    return True


def _this_holder(purpose: str) -> str:
    program = Path(sys.argv[0] if sys.argv else "")
    name = program.parent.name if program.name == "__main__.py" else program.name
    command = " ".join([name, *sys.argv[1:]]) if name else ""
    return json.dumps(
        {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": command[:300] or purpose,
            "purpose": purpose,
            "since": _dt.datetime.now().isoformat(sep=" ", timespec="seconds"),
        }
    )


def _try_os_lock(fd: int) -> bool:
    """Take the OS lock on ``fd`` without waiting; False when it is held."""
    if sys.platform == "win32":
        import msvcrt

        os.lseek(fd, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]
        except OSError as exc:
            if exc.errno in (errno.EACCES, errno.EDEADLK):
                return False
            raise
        return True
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True


def _os_unlock(fd: int) -> None:
    if sys.platform == "win32":
        import msvcrt

        os.lseek(fd, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)  # type: ignore[attr-defined]
    else:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_UN)


def _open_lock_file(path: Path) -> tuple[int, bool]:
    """Open (creating if needed) the lock file; whether this call created it."""
    while True:
        try:
            return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644), True
        except FileExistsError:
            pass
        try:
            return os.open(path, os.O_RDWR), False
        except FileNotFoundError:
            continue  # its holder just released it


def _read_holder(path: Path, attempts: int = 5) -> Holder | None:
    """The details in a lock file (retried briefly: its holder may be writing)."""
    for _ in range(attempts):
        try:
            holder = Holder.parse(path.read_text(encoding="utf-8"))
        except OSError:
            holder = None
        if holder is not None:
            return holder
        time.sleep(0.02)
    return None


class RunLock:
    """The exclusive lock of one run directory (a context manager).

    ``acquire`` creates the directory if needed and raises
    :class:`RunDirLocked` naming the holder when another process (or another
    run in this process) holds it. ``took_over`` is then the holder that died
    without releasing it, if any. ``release`` removes the lock file, and the
    directory too when this lock created it and nothing else was written.
    """

    def __init__(self, directory: Path, purpose: str = "train") -> None:
        self.directory = Path(directory)
        self.path = self.directory / LOCK_FILE
        self.purpose = purpose
        self.took_over: Holder | None = None
        self._fd: int | None = None
        self._exclusive_file = False
        self._created_dir = False

    @property
    def held(self) -> bool:
        return self._fd is not None or self._exclusive_file

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def acquire(self) -> RunLock:
        if self.held:
            return self
        with guarded(self.directory, "use"):
            self._created_dir = not self.directory.exists()
        ensure_dir(self.directory)
        with guarded(self.path):
            while True:
                fd, created = _open_lock_file(self.path)
                try:
                    locked = _try_os_lock(fd)
                except OSError as exc:
                    if exc.errno in _NO_LOCKS and created:  # created exclusively
                        self._exclusive_file = True
                        try:
                            self._write_holder(fd)
                        finally:
                            os.close(fd)
                        return self
                    os.close(fd)
                    if exc.errno in _NO_LOCKS:
                        return self._acquire_exclusive_file()
                    raise
                if not locked:
                    os.close(fd)
                    self._refuse(_read_holder(self.path))
                if self._same_file(fd):
                    break
                # The holder released (and removed) the file between our open
                # and our lock: lock the new file instead.
                os.close(fd)
            self._fd = fd
            os.lseek(fd, 0, os.SEEK_SET)
            previous = Holder.parse(os.read(fd, 4096).decode("utf-8", "replace"))
            if previous is not None and previous.pid is not None:
                self.took_over = previous
            self._write_holder(fd)
        return self

    def took_over_note(self) -> str | None:
        """One line saying whose abandoned lock this one took over, if any."""
        if self.took_over is None:
            return None
        return (
            f"{self.directory} was left locked by {self.took_over.describe()},"
            " which is no longer running; taking it over"
        )

    def _same_file(self, fd: int) -> bool:
        try:
            now = os.stat(self.path)
        except FileNotFoundError:
            return False
        mine = os.fstat(fd)
        return (now.st_dev, now.st_ino) == (mine.st_dev, mine.st_ino)

    def _write_holder(self, fd: int) -> None:
        data = _this_holder(self.purpose).encode("utf-8")
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, data)
        os.ftruncate(fd, len(data))
        os.fsync(fd)

    def _refuse(self, holder: Holder | None) -> None:
        who = holder.describe() if holder else "another process"
        raise RunDirLocked(
            f"{self.directory} is in use by {who}; wait for it to finish or stop"
            " it (one process writes a run directory at a time)",
            holder,
        )

    def _acquire_exclusive_file(self) -> RunLock:
        """Git-style lock for file systems without locks: the file's existence."""
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                holder = _read_holder(self.path)
                if holder is not None and holder.alive() is False:
                    self.path.unlink(missing_ok=True)  # its holder is gone
                    self.took_over = holder
                    continue
                if holder is not None and holder.alive() is None:
                    raise RunDirLocked(
                        f"{self.directory} is locked by {holder.describe()}, which"
                        " this host cannot check (this file system has no locks);"
                        f" if that run is over, delete {self.path}",
                        holder,
                    ) from None
                self._refuse(holder)
            try:
                self._write_holder(fd)
            finally:
                os.close(fd)
            self._exclusive_file = True
            return self
        self._refuse(_read_holder(self.path))
        raise AssertionError("unreachable")

    def release(self) -> None:
        """Give the lock back (removing its file); safe to call twice."""
        if not self.held:
            return
        try:
            if sys.platform == "win32" and self._fd is not None:
                _os_unlock(self._fd)
                os.close(self._fd)
                self._fd = None
            self.path.unlink(missing_ok=True)  # before unlocking (see acquire)
        except OSError:
            pass  # the lock itself goes with the file descriptor
        finally:
            if self._fd is not None:
                os.close(self._fd)  # releases the OS lock
                self._fd = None
            self._exclusive_file = False
        if self._created_dir:
            try:
                self.directory.rmdir()  # only if nothing else was written
                fsync_dir(self.directory.parent)
            except OSError:
                pass


def run_dir_is_empty(directory: Path) -> bool:
    """Whether a run directory holds nothing but its lock file."""
    if not directory.is_dir():
        return True
    return all(p.name == LOCK_FILE for p in directory.iterdir())
