"""Exact resume after a real SIGKILL: a run killed in the middle of writing a
checkpoint, resumed, killed again between checkpoints and resumed with
``gptkit train --resume RUN_DIR`` writes the same metrics.jsonl as a run that
never stopped.

The killed runs are real ``gptkit train`` processes. To catch a writer in the
middle of a checkpoint, a run is started through ``tests/pause_at_checkpoint.py
N``, which makes the process wait while ``step-N`` is half written, and the test
kills it there.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from gptkit.core.checkpoints.layout import latest_checkpoint, recover_incomplete
from gptkit.core.checkpoints.native import save_checkpoint
from tests.conftest import REPO
from tests.helpers import tiny_model

RUN = [
    "--preset",
    "tiny",
    "--context-length",
    "32",
    "--batch-size",
    "2",
    "--drop-rate",
    "0.1",  # dropout: the resumed RNG state matters
    "--eval-freq",
    "2",
    "--eval-iter",
    "2",
    "--max-new-tokens",
    "3",
    "--max-steps",
    "12",
    "--checkpoint-every",
    "3",
    "--logger",
    "jsonl",
]


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def start():
    """Start ``gptkit train ARGS`` (pausing inside checkpoint ``step-N`` when
    ``pause_at=N``); any process still running at the end of the test is
    killed."""
    started: list[subprocess.Popen] = []

    def run(args: list[str], pause_at: int | None = None) -> subprocess.Popen:
        env = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{REPO}"}
        launcher = ["-m", "gptkit"]
        if pause_at is not None:
            launcher = [str(REPO / "tests" / "pause_at_checkpoint.py"), str(pause_at)]
        proc = subprocess.Popen(
            [sys.executable, *launcher, "train", *args],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=tempfile.TemporaryFile(),  # read back if it fails early
        )
        started.append(proc)
        return proc

    yield run
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def wait_for(proc: subprocess.Popen, ready, timeout: float = 240.0) -> None:
    """Poll ``ready()`` until true; fail if the process ends first."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            proc.stderr.seek(0)
            output = proc.stderr.read().decode(errors="replace")
            pytest.fail(f"process ended ({proc.returncode}): {output}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("timed out")
        time.sleep(0.02)


def sigkill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(60) == -signal.SIGKILL


def half_written(run: Path, step: int):
    def check() -> bool:
        return any(
            (p / "model.safetensors").is_file()
            for p in (run / "checkpoints").glob(f".tmp-step-{step:06d}-*")
        )

    return check


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "bf16-true"])
def test_killed_runs_resume_to_the_uninterrupted_metrics(
    tmp_path, cli_run, verdict_path, start, precision
):
    """bf16-true too: its checkpoints hold the float32 master weights."""
    run = tmp_path / "killed"
    common = ["--corpus", str(verdict_path), *RUN, "--precision", precision]
    # 1. Killed from outside in the middle of writing checkpoint 6 (the
    #    reference run goes on in this process meanwhile).
    first = start([*common, "--out", str(run)], pause_at=6)
    # Every run is a fresh process, so all run under the same conditions (the test
    # process has run other tests, which may leave library state behind).
    reference = tmp_path / "reference"
    assert start([*common, "--out", str(reference)]).wait(timeout=600) == 0
    wait_for(first, half_written(run, 6))
    sigkill(first)
    assert [p.name for p in (run / "checkpoints").glob("step-*")] == ["step-000003"]

    # 2. Resumed from step 3 (the half-written checkpoint is tidied away);
    #    killed from outside at whatever step it has reached after checkpoint 6
    #    (pausing at 9 only makes sure it cannot finish before the kill).
    second = start(["--resume", str(run)], pause_at=9)
    wait_for(
        second,
        lambda: any(r.get("step", 0) >= 6 for r in rows(run / "metrics.jsonl")),
    )
    sigkill(second)
    assert not list((run / "checkpoints").glob(".tmp-step-000006-*"))

    # 3. Resumed to the end.
    assert start(["--resume", str(run)]).wait(timeout=600) == 0
    expected, got = rows(reference / "metrics.jsonl"), rows(run / "metrics.jsonl")
    evals = [r for r in expected if "val_loss" in r]
    assert len(evals) == 6
    assert [r for r in got if "val_loss" in r] == evals  # bitwise equal floats
    assert got == expected  # the step rows too
    assert rows(run / "samples.jsonl") == rows(reference / "samples.jsonl")
    assert not list((run / "checkpoints").glob(".*"))  # no leftovers


def test_what_a_killed_writer_leaves_is_tidied(tmp_path):
    model = tiny_model()
    save_checkpoint(tmp_path, 3, model, model.cfg)
    save_checkpoint(tmp_path, 6, model, model.cfg)
    # Killed while writing step 9, and while replacing step 6 (moved aside, the
    # replacement not yet renamed into place).
    (tmp_path / ".tmp-step-000009-123").mkdir()
    (tmp_path / ".tmp-step-000009-123" / "model.safetensors").write_bytes(b"half")
    (tmp_path / "step-000006").rename(tmp_path / ".old-step-000006-123")
    assert latest_checkpoint(tmp_path).name == "step-000003"
    done = recover_incomplete(tmp_path)
    assert sorted(done) == [
        "removed the unfinished checkpoint write .tmp-step-000009-123",
        "restored step-000006 from an interrupted replacement",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-000003", "step-000006"]
    assert latest_checkpoint(tmp_path).name == "step-000006"
