"""Storage errors as one line: every cause the OS gives is translated with the
path and what to do; writers that wrap the OS's errors (safetensors, torch.save)
are traced to them; a failed checkpoint leaves the previous ones intact and no
temporary directory; resume finds the newest intact checkpoint.

Disk-full faults are real where the kernel allows it without privileges: a
file-size limit (``RLIMIT_FSIZE``) makes every write past N bytes fail inside
the real writers (Rust, C++, Python); other causes are injected ``OSError``s.
"""

from __future__ import annotations

import errno
import os
import pickle
import subprocess
import sys
import textwrap

import pytest
from safetensors import SafetensorError

from gptkit.core.checkpoints import native as ckpt_module
from gptkit.core.checkpoints.layout import list_checkpoints, set_aside
from gptkit.core.checkpoints.native import (
    load_checkpoint,
    require_safe_torch_load,
    save_checkpoint,
)
from gptkit.errors import GptkitError
from gptkit.runs.resume import ResumePoint
from gptkit.system import storage
from gptkit.system.storage import (
    AppendFile,
    StorageError,
    atomic_write,
    find_os_error,
    guarded,
    storage_error,
)
from tests.conftest import REPO
from tests.helpers import tiny_model


def oserror(code: int, filename: str | None = None) -> OSError:
    return OSError(code, os.strerror(code), filename)


@pytest.mark.parametrize(
    ("code", "fragments"),
    [
        (errno.ENOSPC, ["no space left on device", "free some space"]),
        (errno.EDQUOT, ["quota", "free some space"]),
        (errno.EROFS, ["read-only file system", "choose a writable location"]),
        (errno.EACCES, ["permission denied", "choose a location you may write to"]),
        (errno.ENAMETOOLONG, ["file name too long", "choose a shorter name"]),
        (errno.EFBIG, ["file too large", "ulimit -f"]),
        (errno.EIO, ["input/output error"]),
        (errno.ENOENT, ["no such file or directory", "missing"]),
    ],
)
def test_each_cause_is_one_line_naming_the_path(tmp_path, code, fragments) -> None:
    target = tmp_path / "run" / "metrics.jsonl"
    err = storage_error(oserror(code), target)
    text = str(err)
    assert text.startswith(f"cannot write {target}: ")
    assert "\n" not in text
    for fragment in fragments:
        assert fragment in text.lower()
    assert isinstance(err, GptkitError) and isinstance(err, OSError)
    assert err.errno == code and err.filename == str(target)


def test_a_path_through_a_regular_file_names_the_file(tmp_path) -> None:
    blocker = tmp_path / "notes.txt"
    blocker.write_text("x")
    with pytest.raises(StorageError) as info, guarded(blocker / "run"):
        (blocker / "run").mkdir(parents=True)
    assert f"{blocker} is a file, not a directory" in str(info.value)


def test_a_temporary_sibling_is_reported_as_its_target(tmp_path) -> None:
    target = tmp_path / "config.json"
    tmp = storage.temporary_sibling(target)
    assert str(target) in str(storage_error(oserror(errno.ENOSPC, str(tmp)), target))


def test_storage_errors_survive_pickling() -> None:
    err = storage_error(oserror(errno.ENOSPC), "/x/y")
    again = pickle.loads(pickle.dumps(err))
    assert type(again) is StorageError
    assert str(again) == str(err) and again.errno == errno.ENOSPC


def test_library_errors_are_traced_to_their_os_error() -> None:
    rust = SafetensorError("Error while serializing: I/O error: No space (os error 28)")
    assert find_os_error(rust).errno == errno.ENOSPC
    try:
        try:
            raise oserror(errno.EROFS)
        except OSError as inner:
            raise RuntimeError("[enforce fail at inline_container.cc:672]") from inner
    except RuntimeError as outer:
        assert find_os_error(outer).errno == errno.EROFS
    assert find_os_error(RuntimeError("shape mismatch")) is None


def test_guarded_leaves_other_errors_alone(tmp_path) -> None:
    with pytest.raises(ValueError), guarded(tmp_path):
        raise ValueError("a bug stays a bug")


def test_atomic_write_failure_keeps_the_old_file(tmp_path, monkeypatch) -> None:
    target = tmp_path / "config.json"
    target.write_text("old")

    def full(*args, **kwargs):
        raise oserror(errno.ENOSPC)

    monkeypatch.setattr(storage.os, "fsync", full)
    with pytest.raises(StorageError, match="no space left"):
        atomic_write(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]


def test_append_file_names_its_file_and_closes_quietly_after(tmp_path) -> None:
    log = AppendFile(tmp_path / "metrics.jsonl", append=False)
    log.write("{}\n")

    class Full:
        def write(self, text):
            raise oserror(errno.ENOSPC)

        def flush(self):
            pass

        def close(self):
            raise oserror(errno.ENOSPC)

    real = log._file
    log._file = Full()
    with pytest.raises(StorageError, match=r"metrics\.jsonl: no space left"):
        log.write("{}\n")
    log.close()  # the failure was reported once; closing does not raise again
    real.close()


# -- checkpoints ------------------------------------------------------------------


def test_every_checkpoint_writer_failure_keeps_the_previous_one(
    tmp_path, monkeypatch
) -> None:
    model = tiny_model()
    save_checkpoint(tmp_path, 1, model, model.cfg, trainer_state={"step": 1})
    failures = {
        "safetensors": SafetensorError("I/O error: No space left (os error 28)"),
        "torch.save": oserror(errno.ENOSPC),
        "rename": oserror(errno.EROFS),
    }
    for name, exc in failures.items():

        def fail(*args, exc=exc, **kwargs):
            raise exc

        with monkeypatch.context() as m:
            if name == "safetensors":
                m.setattr(ckpt_module, "save_file", fail)
            elif name == "torch.save":
                m.setattr(ckpt_module.torch, "save", fail)
            else:
                m.setattr(ckpt_module.os, "replace", fail)
            with pytest.raises(StorageError) as info:
                save_checkpoint(tmp_path, 2, model, model.cfg, trainer_state={})
        message = str(info.value)
        assert message.startswith(f"cannot write checkpoint {tmp_path / 'step-000002'}")
        assert "previous checkpoint step-000001 is intact" in message, name
        assert [p.name for p in tmp_path.iterdir()] == ["step-000001"], name
    load_checkpoint(tmp_path / "step-000001")


RLIMIT_SAVE = textwrap.dedent(
    """
    import resource, sys
    from pathlib import Path
    import torch
    from gptkit.core.checkpoints.native import save_checkpoint
    from gptkit.errors import GptkitError
    from tests.helpers import tiny_model
    model = tiny_model()
    where, limit = Path(sys.argv[1]), int(sys.argv[2])
    save_checkpoint(where, 1, model, model.cfg, trainer_state={"step": 1})
    # From here on no file may grow past `limit` bytes: the disk is "full".
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
    state = {"moments": torch.zeros(10_000_000)}  # 40 MB
    try:
        save_checkpoint(where, 2, model, model.cfg, trainer_state=state)
    except GptkitError as exc:
        print(exc)
    """
)


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE is POSIX")
@pytest.mark.parametrize(
    "limit",
    [64 << 10, 20 << 20],
    ids=["safetensors-fails", "torch-save-fails"],  # the weights are 13 MB
)
def test_a_real_write_failure_inside_the_writers(tmp_path, limit) -> None:
    """The kernel refuses the writes (a file size limit) inside safetensors'
    Rust writer or torch.save's C++ one: still one line with the OS's cause,
    and no temporary directory left."""
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{REPO}"}
    out = subprocess.run(
        [sys.executable, "-c", RLIMIT_SAVE, str(tmp_path), str(limit)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    line = out.stdout.strip()
    assert line.startswith(f"cannot write checkpoint {tmp_path / 'step-000002'}")
    assert "file too large" in line and "step-000001 is intact" in line
    assert [p.name for p in tmp_path.iterdir()] == ["step-000001"]


def test_resume_point_describes_damaged_checkpoints(tmp_path) -> None:
    point = ResumePoint(tmp_path / "step-000003")
    point.damaged = [
        (tmp_path / "step-000009", "corrupt weights"),
        (tmp_path / "step-000006", "corrupt trainer state"),
    ]
    lines = point.describe()
    assert lines[0] == "checkpoint step-000009 is damaged (corrupt weights)"
    assert lines[-1] == "resuming from the older step-000003"


def test_a_damaged_checkpoint_is_set_aside(tmp_path) -> None:
    model = tiny_model()
    for step in (3, 6, 9):
        save_checkpoint(tmp_path, step, model, model.cfg, trainer_state={"step": step})
    moved = set_aside(tmp_path / "step-000009")
    assert moved.name == "damaged-step-000009"
    assert [p.name for p in list_checkpoints(tmp_path)] == [
        "step-000003",
        "step-000006",
    ]


def test_resume_point_of_a_run_without_checkpoints(tmp_path) -> None:
    point = ResumePoint(None)
    assert (
        "before its first checkpoint; starting again at step 0" in point.describe()[0]
    )


def test_torch_before_2_6_is_refused_for_pickles() -> None:
    with pytest.raises(GptkitError, match="CVE-2025-32434"):
        require_safe_torch_load("2.5.1+cu121")
    require_safe_torch_load("2.6.0")
    require_safe_torch_load("2.13.0+cpu")
