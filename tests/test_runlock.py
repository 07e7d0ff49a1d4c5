"""The run-directory lock, with real processes: a second writer is refused
naming the first; a lock left by a SIGKILLed holder is taken over; a file
system without locks falls back to an exclusive lock file."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from gptkit.system import lock as runlock
from gptkit.system.lock import LOCK_FILE, RunDirLocked, RunLock, run_dir_is_empty
from tests.conftest import REPO

HOLD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from gptkit.system.lock import RunLock
    lock = RunLock(Path(sys.argv[1])).acquire()
    print("locked", flush=True)
    sys.stdin.readline()   # hold until told to go (or killed)
    lock.release()
    print("released", flush=True)
    """
)


@pytest.fixture
def holder():
    """Start a process that takes the lock of a directory and holds it until
    its standard input gets a line."""
    started: list[subprocess.Popen] = []

    def start(directory: Path) -> subprocess.Popen:
        env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
        proc = subprocess.Popen(
            [sys.executable, "-c", HOLD, str(directory)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        started.append(proc)
        assert proc.stdout.readline().strip() == "locked"
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_second_writer_is_refused_naming_the_holder(tmp_path: Path, holder) -> None:
    run = tmp_path / "run"
    proc = holder(run)
    with pytest.raises(RunDirLocked) as info:
        RunLock(run).acquire()
    message = str(info.value)
    assert f"process {proc.pid}" in message
    assert str(run) in message
    assert "\n" not in message
    assert info.value.holder.pid == proc.pid
    # Once the holder is done, the directory is free again.
    proc.stdin.write("\n")
    proc.stdin.flush()
    assert proc.stdout.readline().strip() == "released"
    proc.wait()
    with RunLock(run) as lock:
        assert lock.took_over is None
    assert not (run / LOCK_FILE).exists()


def test_stale_lock_after_sigkill_is_taken_over(tmp_path: Path, holder) -> None:
    run = tmp_path / "run"
    proc = holder(run)
    (run / "config.json").write_text("{}")  # the run wrote something
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (run / LOCK_FILE).exists()  # kill -9 leaves the file, not the lock
    with RunLock(run) as lock:
        assert lock.took_over is not None and lock.took_over.pid == proc.pid
        note = lock.took_over_note()
        assert f"process {proc.pid}" in note and "no longer running" in note
        stored = json.loads((run / LOCK_FILE).read_text())
        assert stored["pid"] == os.getpid()
    assert (run / "config.json").exists()


def test_one_process_cannot_lock_twice(tmp_path: Path) -> None:
    with RunLock(tmp_path / "run"):
        with pytest.raises(RunDirLocked, match="this process"):
            RunLock(tmp_path / "run").acquire()


def test_release_removes_a_directory_it_created_if_still_empty(tmp_path: Path) -> None:
    lock = RunLock(tmp_path / "new").acquire()
    assert run_dir_is_empty(tmp_path / "new")
    lock.release()
    assert not (tmp_path / "new").exists()
    existing = tmp_path / "existing"
    existing.mkdir()
    RunLock(existing).acquire().release()
    assert existing.is_dir()


def test_many_processes_race_and_exactly_one_wins(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import sys, time
        from pathlib import Path
        from gptkit.system.lock import RunLock, RunDirLocked
        start = float(sys.argv[2])
        while time.time() < start:
            pass
        try:
            lock = RunLock(Path(sys.argv[1])).acquire()
        except RunDirLocked:
            print("refused", flush=True)
        else:
            print("won", flush=True)
            time.sleep(1.5)
            lock.release()
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    start = time.time() + 1.5
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(tmp_path / "run"), str(start)],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(4)
    ]
    outcomes = sorted(p.communicate(timeout=60)[0].strip() for p in procs)
    assert outcomes == ["refused", "refused", "refused", "won"]


def test_file_system_without_locks_falls_back_to_a_lock_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_locks(fd: int) -> bool:
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(runlock, "_try_os_lock", no_locks)
    run = tmp_path / "run"
    first = RunLock(run).acquire()
    with pytest.raises(RunDirLocked, match=f"this process \\({os.getpid()}\\)"):
        RunLock(run).acquire()
    first.release()
    assert not (run / LOCK_FILE).exists()
    # A lock file left by a process that is gone is taken over.
    run.mkdir()
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    gone = int(dead.stdout)
    (run / LOCK_FILE).write_text(json.dumps({"pid": gone, "host": os.uname().nodename}))
    with RunLock(run) as lock:
        assert lock.took_over.pid == gone
    # One from another host cannot be checked: refused, saying what to do.
    (run / LOCK_FILE).write_text(json.dumps({"pid": 1, "host": "elsewhere"}))
    with pytest.raises(RunDirLocked, match="delete"):
        RunLock(run).acquire()
