"""Distributed training: two torchrun processes (gloo, CPU) with --batch-size 2
train exactly like one process with --batch-size 4; the sharding behind it;
the --devices launcher."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gptkit.cli.launch import strip_launcher_options, torchrun_argv
from gptkit.core.data import EpochSampler
from tests.conftest import REPO, assert_clean_error

RUN = [
    "--context-length",
    "32",
    "--drop-rate",
    "0",
    "--grad-accum",
    "2",  # covers DDP's no_sync micro-batches
    "--eval-freq",
    "2",
    "--eval-iter",
    "3",
    "--max-new-tokens",
    "0",
    "--max-steps",
    "6",
    "--logger",
    "jsonl",
]


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def torchrun() -> list[str]:
    script = Path(sys.executable).with_name("torchrun")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-m", "torch.distributed.run"]


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["tiny", "llama-tiny", "qwen3-tiny"])
def test_two_processes_match_one_process_with_the_global_batch(
    tmp_path, cli_run, verdict_path, preset
):
    """Each model family (gpt2, llama, qwen3) trains the same under DDP."""
    common = ["--corpus", str(verdict_path), "--preset", preset, *RUN]
    ddp = tmp_path / "ddp"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.Popen(
        [
            *torchrun(),
            "--standalone",
            "--nproc-per-node",
            "2",
            "-m",
            "gptkit",
            "train",
            *common,
            "--batch-size",
            "2",
            "--out",
            str(ddp),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    single = tmp_path / "single"  # meanwhile, in this process
    result = cli_run(  # a single process shuffles like the shards: --data-order seeded
        "train",
        *common,
        "--batch-size",
        "4",
        "--data-order",
        "seeded",
        "--out",
        str(single),
    )
    assert result.exit_code == 0, result.stderr
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output

    one, two = rows(single / "metrics.jsonl"), rows(ddp / "metrics.jsonl")
    assert [sorted(r) for r in one] == [sorted(r) for r in two]
    evals = [(a, b) for a, b in zip(one, two, strict=True) if "val_loss" in a]
    assert len(evals) == 3
    for a, b in zip(one, two, strict=True):
        assert (a["step"], a["tokens_seen"]) == (b["step"], b["tokens_seen"])
        for key in ("loss", "train_loss", "val_loss"):
            if key in a:
                assert abs(a[key] - b[key]) <= 1e-5, (key, a, b)
    assert one[-1]["tokens_seen"] == 6 * 2 * 4 * 32  # steps x accum x batch x T
    # One writer: rank 0's run directory, checkpoint and config.
    config = json.loads((ddp / "config.json").read_text())
    assert config["data"]["processes"] == 2
    assert config["data"]["global_batch_size"] == 2 * 2 * 2
    assert [p.name for p in (ddp / "checkpoints").iterdir()] == ["step-000006"]
    assert output.count("Traceback") == 0


@pytest.mark.parametrize("lazy", [False, True])
@pytest.mark.parametrize("world", [2, 3])
def test_per_process_batches_together_are_the_single_process_batch(lazy, world):
    """Process r's batch b holds positions (b*B + j)*W + r of the epoch's order
    (j < B), so the W batches b together are positions b*B*W ... (b+1)*B*W - 1:
    batch b of one process with batch size B*W."""
    n, batch = 103, 2
    single = EpochSampler(n, shuffle=True, seed=5, lazy=lazy)
    single.set_epoch(2)
    order = list(single)
    shards = [
        EpochSampler(n, shuffle=True, seed=5, rank=r, world_size=world, lazy=lazy)
        for r in range(world)
    ]
    per_rank = []
    for shard in shards:
        shard.set_epoch(2)
        per_rank.append(list(shard))
    assert {len(p) for p in per_rank} == {n // world}  # the same number of batches
    for b in range(n // world // batch):
        together = sorted(i for p in per_rank for i in p[b * batch : (b + 1) * batch])
        assert together == sorted(order[b * batch * world : (b + 1) * batch * world])


def test_lazy_order_is_a_permutation_computed_as_consumed():
    sampler = EpochSampler(1000, shuffle=True, seed=1, lazy=True)
    sampler.set_epoch(0)
    first = list(sampler)
    assert sorted(first) == list(range(1000)) and first != list(range(1000))
    sampler.set_epoch(1)
    assert list(sampler) != first
    sampler.set_epoch(0, start=990)
    assert list(sampler) == first[990:]
    # A trillion windows: nothing is materialised, the first indices come at once.
    huge = EpochSampler(10**12, shuffle=True, seed=1, lazy=True)
    head = [i for i, _ in zip(huge, range(1000), strict=False)]
    assert len(set(head)) == 1000 and max(head) < 10**12
    assert np.median(head) > 10**10  # spread over the whole range


def test_launcher_options_are_removed_from_the_workers_command():
    argv = ["train", "--devices", "2", "--nnodes=2", "--lr", "1e-3", "--rdzv-id", "x"]
    assert strip_launcher_options(argv) == ["train", "--lr", "1e-3"]
    standalone = torchrun_argv(["train", "--lr", "1"], nproc_per_node=4, python="py")
    assert standalone == [
        "py",
        "-m",
        "torch.distributed.run",
        "--nproc-per-node=4",
        "--standalone",
        "-m",
        "gptkit",
        "train",
        "--lr",
        "1",
    ]
    multi = torchrun_argv(
        ["train"],
        nproc_per_node=8,
        nnodes="2",
        node_rank=1,
        rdzv_backend="c10d",
        rdzv_endpoint="head:29500",
        rdzv_id="job7",
        python="py",
    )
    assert multi[3:9] == [
        "--nproc-per-node=8",
        "--nnodes=2",
        "--node-rank=1",
        "--rdzv-backend=c10d",
        "--rdzv-endpoint=head:29500",
        "--rdzv-id=job7",
    ]


def test_devices_re_executes_the_command_under_torchrun(
    monkeypatch, cli_run, tmp_path, verdict_path
):
    from gptkit.cli import launch

    launched: list[list[str]] = []
    monkeypatch.setattr(launch, "exec_torchrun", launched.append)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    args = ["train", "--corpus", str(verdict_path), "--devices", "2", "--lr", "1e-3"]
    monkeypatch.setattr(sys, "argv", ["gptkit", *args])
    # exec_torchrun replaced: the command returns without training.
    assert cli_run(*args).exit_code == 0
    [argv] = launched
    assert argv[1:5] == [
        "-m",
        "torch.distributed.run",
        "--nproc-per-node=2",
        "--standalone",
    ]
    worker = argv[argv.index("gptkit") + 1 :]
    assert worker[: worker.index("--out")] == [
        "train",
        "--corpus",
        str(verdict_path),
        "--lr",
        "1e-3",
    ]
    assert os.environ["OMP_NUM_THREADS"] == str(
        max(1, len(os.sched_getaffinity(0)) // 2)
    )


@pytest.mark.parametrize(
    ("args", "env", "fragment"),
    [
        (["--nnodes", "2"], {}, "--nnodes goes with --devices"),
        (["--devices", "2"], {"TORCHELASTIC_RUN_ID": "x"}, "already runs under"),
        (["--devices", "2", "--device", "mps"], {}, "single device"),
    ],
)
def test_launcher_conflicts_are_clear_errors(cli_run, monkeypatch, args, env, fragment):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert_clean_error(cli_run("train", *args), fragment)
