"""A third-party model family through entry points: the test package
``tests/plugins/gptkit-toy-family`` (pip-installed into a temporary --target)
adds ``toy``; gptkit lists it, trains it from scratch and generates from the
run, and a Hugging Face checkpoint it cannot read is refused in one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.test_plugin_ecosystem import _pip_install_target

PACKAGE = REPO / "tests" / "plugins" / "gptkit-toy-family"


@pytest.fixture(scope="module")
def toy_target(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("toy-family")
    return _pip_install_target(PACKAGE, base / "site", base)


def gptkit(target: Path, *args: str) -> subprocess.CompletedProcess:
    """``python -m gptkit ARGS`` with the toy package (and this tree's gptkit)
    importable, strict plugins."""
    env = {k: v for k, v in os.environ.items() if k != "GPTKIT_LOAD_PLUGINS"}
    env["PYTHONPATH"] = os.pathsep.join([str(target), str(REPO / "src")])
    env["GPTKIT_STRICT_PLUGINS"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "gptkit", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
    )


@pytest.mark.slow
def test_a_plugin_family_is_listed_trains_and_generates(toy_target, tmp_path):
    listed = gptkit(toy_target, "plugins", "--json")
    assert listed.returncode == 0, listed.stderr
    assert '"toy"' in listed.stdout and '"architecture"' in listed.stdout

    run = tmp_path / "run"
    trained = gptkit(
        toy_target, "train", "--arch", "toy", "--corpus",
        str(REPO.parent / "shared" / "data" / "the-verdict.txt"),
        "--epochs", "1", "--max-steps", "6", "--eval-freq", "3", "--eval-iter", "1",
        "--batch-size", "4", "--lr", "3e-3", "--out", str(run), "--logger", "jsonl",
        "--device", "cpu", "--max-new-tokens", "3",
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    config = json.loads((run / "config.json").read_text())
    assert config["preset"] == "toy-tiny" and config["model"]["arch"] == "toy"
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert losses[-1] < losses[0]

    for args in (["--sampler", "greedy"], ["--num-beams", "2"], ["--stream"]):
        out = gptkit(
            toy_target, "generate", "--weights", str(run), "--device", "cpu",
            "--max-new-tokens", "5", "Every effort moves you", *args,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip()

    refused = gptkit(toy_target, "export", "--weights", str(run), str(tmp_path / "hf"))
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        "gptkit: error: the toy family has no Hugging Face format"
    ]
