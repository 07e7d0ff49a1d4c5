"""FSDP on the CPU (gloo), for each model family (gpt2, llama, qwen3): two
torchrun processes with --strategy fsdp train as DDP does (losses within 1e-5);
their sharded checkpoint resumes with one process and with two and continues
with the same losses; ``gptkit generate --weights RUN`` reads it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from gptkit.core.checkpoints.layout import is_sharded_checkpoint
from tests.conftest import REPO
from tests.test_distributed import torchrun

RUN = [
    "--context-length", "16", "--drop-rate", "0",
    "--batch-size", "2", "--grad-accum", "2", "--eval-freq", "2", "--eval-iter", "2",
    "--max-new-tokens", "4", "--max-steps", "6", "--checkpoint-every", "3",
    "--logger", "jsonl",
]  # fmt: skip
LOSSES = ("loss", "train_loss", "val_loss")


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def start(args: list[str], processes: int) -> tuple[subprocess.Popen, Any]:
    """``gptkit train ARGS`` in ``processes`` processes (torchrun for two);
    the process and the file its standard error goes to."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    launcher = [sys.executable, "-m", "gptkit"]
    if processes > 1:
        launcher = [*torchrun(), "--standalone", f"--nproc-per-node={processes}"]
        launcher += ["-m", "gptkit"]
    errors = tempfile.TemporaryFile()
    proc = subprocess.Popen(
        [*launcher, "train", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=errors,
    )
    return proc, errors


def finish(started: tuple[subprocess.Popen, Any]) -> None:
    proc, errors = started
    code = proc.wait(timeout=300)
    errors.seek(0)
    output = errors.read().decode(errors="replace")
    assert code == 0, output
    assert "Traceback" not in output


def assert_same_run(got: Path, expected: Path) -> None:
    a, b = rows(expected / "metrics.jsonl"), rows(got / "metrics.jsonl")
    assert [sorted(r) for r in a] == [sorted(r) for r in b]
    for x, y in zip(a, b, strict=True):
        assert (x["step"], x["tokens_seen"]) == (y["step"], y["tokens_seen"])
        for key in LOSSES:
            if key in x:
                assert abs(x[key] - y[key]) <= 1e-5, (key, x, y)
    assert rows(got / "samples.jsonl") == rows(expected / "samples.jsonl")


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["tiny", "llama-tiny", "qwen3-tiny"])
def test_fsdp_trains_as_ddp_and_resumes_with_one_or_two_processes(
    tmp_path, verdict_path, cli_run, preset
):
    """For each model family (gpt2, llama, qwen3): FSDP wraps its blocks."""
    common = ["--corpus", str(verdict_path), "--preset", preset, *RUN]
    ddp, fsdp = tmp_path / "ddp", tmp_path / "fsdp"
    running = [
        start([*common, "--strategy", "ddp", "--out", str(ddp)], 2),
        start([*common, "--strategy", "fsdp", "--out", str(fsdp)], 2),
    ]
    for proc in running:
        finish(proc)
    assert_same_run(fsdp, ddp)
    evals = [r for r in rows(fsdp / "metrics.jsonl") if "val_loss" in r]
    assert len(evals) == 3
    last = fsdp / "checkpoints" / "step-000006"
    assert is_sharded_checkpoint(last)
    # Each process wrote its own shards (and nothing whole).
    assert sorted(p.name for p in (last / "sharded").glob("*.distcp")) == [
        "__0_0.distcp",
        "__1_0.distcp",
    ]
    assert not list(fsdp.rglob("model.safetensors"))

    # Resume from step 3 with one process and with two.
    copies = {}
    for processes in (1, 2):
        copy = tmp_path / f"resumed-{processes}"
        shutil.copytree(fsdp, copy)
        shutil.rmtree(copy / "checkpoints" / "step-000006")
        copies[processes] = copy
    # One process resumes under every built-in logger (the console logger
    # was once told the resume's note before it had started).
    every = [
        a for name in ("jsonl", "console", "csv", "plot") for a in ("--logger", name)
    ]
    running = [
        start(["--resume", str(copies[n]), *(every if n == 1 else [])], n)
        for n in (1, 2)
    ]
    for proc in running:
        finish(proc)
    for copy in copies.values():
        assert_same_run(copy, fsdp)

    # The sharded checkpoint loads whole for generation: the run's last weights
    # continue the prompt as the run's own (greedy) sample did.
    [sample] = rows(fsdp / "samples.jsonl")
    result = cli_run(
        "generate", "--weights", str(fsdp), "--max-new-tokens", "4",
        sample["prompt"],
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert result.stdout.removesuffix("\n") == sample["text"]  # its own newlines kept
