"""Every benchmark result says where and how it was measured: the command, the
date, the gptkit commit, torch, the CPU model and the features that decide which
kernels are fast, cores, threads and the load average."""

from __future__ import annotations

import shutil
import sys

import pytest

from gptkit.bench import measure
from gptkit.bench.measure import (
    gptkit_commit,
    invoked_command,
    provenance_lines,
)


def test_cpu_features_are_the_known_flags_in_order() -> None:
    from gptkit.system import cpu

    features = measure.machine_info("cpu")["cpu_features"]
    assert features["model"] == cpu.model_name() == measure.cpu_model()
    assert features["flags"] == [f for f in cpu.FLAGS if f in cpu.flags()]


def test_the_commit_is_described_in_a_checkout() -> None:
    commit = gptkit_commit()
    if shutil.which("git") is None:
        assert commit is None
    elif commit is not None:
        assert commit.strip() == commit and " " not in commit


def test_the_command_is_shell_quoted(monkeypatch) -> None:
    monkeypatch.setattr(
        sys, "argv", ["/venv/bin/gptkit", "bench", "sampling", "--prompts", "a b.txt"]
    )
    assert invoked_command() == "gptkit bench sampling --prompts 'a b.txt'"


def test_the_header_names_the_machine() -> None:
    result = {
        "created": "2026-12-06T18:39:50+00:00",
        "machine": {
            "command": "gptkit bench sampling",
            "cpu": "AMD EPYC",
            "cpu_features": ["avx2", "fma", "avx512f", "avx512_bf16"],
            "usable_cores": 2,
            "torch_threads": 1,
            "load_average_1min": 0.38,
            "load_average_1min_end": 8.18,
            "torch": "2.13.0+cpu",
            "gptkit": "0.1.0",
            "gptkit_commit": "585e9e5",
            "python": "3.11.7",
        },
    }
    text = "\n".join(provenance_lines(result))
    for fragment in (
        "command: gptkit bench sampling",
        "date: 2026-12-06T18:39:50+00:00",
        "AMD EPYC [avx2 fma avx512f avx512_bf16], 2 cores, 1 torch threads",
        "load average 0.38 -> 8.18",
        "torch 2.13.0+cpu, gptkit 0.1.0 (585e9e5)",
    ):
        assert fragment in text


def test_machine_info_records_the_provenance() -> None:
    torch = pytest.importorskip("torch")
    info = measure.machine_info(torch.device("cpu"))
    for key in ("command", "gptkit_commit", "cpu_features", "load_average_1min"):
        assert key in info
    assert info["command"]
