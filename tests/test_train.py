"""Training end to end on tiny models: losses fall, the run directory holds what
DESIGN.md promises, checkpoints load back, resume continues exactly."""

from __future__ import annotations

import json
from itertools import pairwise

import pytest

from gptkit.plugins.schedulers.schedules import (
    Constant,
    Linear,
    WarmupCosine,
    WarmupStableDecay,
)
from tests.conftest import assert_clean_error

TINY = [
    "--preset",
    "tiny",
    "--batch-size",
    "4",
    "--eval-freq",
    "5",
    "--eval-iter",
    "2",
    "--max-new-tokens",
    "10",
    "--lr",
    "2e-3",
]


def rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, verdict_path):
    from click.testing import CliRunner

    from gptkit.cli.main import cli

    out = tmp_path_factory.mktemp("runs") / "run"
    result = CliRunner().invoke(
        cli,
        [
            "train",
            "--corpus",
            str(verdict_path),
            *TINY,
            "--epochs",
            "3",
            "--out",
            str(out),
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.stderr
    return out, result


def test_run_directory_layout(trained):
    out, _ = trained
    assert (out / "config.json").is_file()
    assert {p.name for p in (out / "plots").iterdir()} == {
        "loss.png",
        "perplexity.png",
        "lr.png",
    }
    ckpt = out / "checkpoints" / "step-000054"  # 3 epochs x 18 steps
    assert {p.name for p in ckpt.iterdir()} == {
        "model.safetensors",
        "config.json",
        "trainer_state.pt",
    }
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["n_layers"] == 2 and config["seed"] == 123
    assert config["data"]["corpus"] and config["scheduler"]["name"] == "constant"


def test_metrics_and_samples(trained):
    out, result = trained
    metrics = rows(out / "metrics.jsonl")
    steps = [r for r in metrics if "loss" in r]
    evals = [r for r in metrics if "val_loss" in r]
    assert [r["step"] for r in steps] == list(range(54))
    assert set(steps[0]) == {"step", "epoch", "tokens_seen", "lr", "loss"}
    assert steps[-1]["tokens_seen"] == 54 * 4 * 64
    assert [r["step"] for r in evals] == list(range(0, 54, 5))
    assert evals[-1]["train_loss"] < evals[0]["train_loss"] - 2.0
    samples = rows(out / "samples.jsonl")
    assert [s["epoch"] for s in samples] == [1, 2, 3]
    assert all(s["text"].startswith("Every effort moves you") for s in samples)
    assert "Ep 1 (Step 000000): Train loss" in result.output
    assert "done: 54 steps" in result.output


def test_checkpoint_generates_and_evaluates(trained, cli_run, verdict_path):
    out, _ = trained
    result = cli_run(
        "generate",
        "--weights",
        str(out),
        "Every effort moves you",
        "--max-new-tokens",
        "5",
        "--json",
    )
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.output)["results"][0]
    assert (
        data["text"].startswith("Every effort moves you")
        and len(data["token_ids"]) == 5
    )
    evaluated = cli_run(
        "eval",
        "--weights",
        str(out),
        "--corpus",
        str(verdict_path),
        "--context-length",
        "64",
        "--batch-size",
        "4",
        "--json",
    )
    assert evaluated.exit_code == 0, evaluated.stderr
    assert json.loads(evaluated.output)["train_loss"] < 8.0


def test_existing_run_directory_is_not_overwritten(trained, cli_run, verdict_path):
    out, _ = trained
    before = (out / "metrics.jsonl").read_bytes()
    result = cli_run("train", "--corpus", str(verdict_path), *TINY, "--out", str(out))
    assert_clean_error(result, "already exists")
    assert (out / "metrics.jsonl").read_bytes() == before


def test_resume_continues_exactly(tmp_path, cli_run, verdict_path):
    common = [
        "--corpus",
        str(verdict_path),
        *TINY,
        "--epochs",
        "2",
        "--drop-rate",
        "0.1",
        "--logger",
        "jsonl",
    ]
    full = tmp_path / "full"
    assert cli_run("train", *common, "--out", str(full)).exit_code == 0
    part = tmp_path / "part"
    result = cli_run(
        "train",
        *common,
        "--out",
        str(part),
        "--max-steps",
        "33",
        "--checkpoint-every",
        "11",
    )
    assert result.exit_code == 0
    # Simulate a run killed after step 33 that had written rows past its checkpoint.
    with open(part / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": 33, "loss": 0.0}) + "\n")
    config = json.loads((part / "config.json").read_text())
    config["settings"]["max_steps"] = None
    (part / "config.json").write_text(json.dumps(config))
    resumed = cli_run("train", "--resume", str(part))
    assert resumed.exit_code == 0, resumed.stderr
    assert rows(part / "metrics.jsonl") == rows(full / "metrics.jsonl")


def test_resume_refuses_changed_settings(tmp_path, cli_run, verdict_path):
    run = tmp_path / "r"
    cli_run(
        "train",
        "--corpus",
        str(verdict_path),
        *TINY,
        "--max-steps",
        "2",
        "--out",
        str(run),
        "--logger",
        "jsonl",
    )
    assert_clean_error(
        cli_run("train", "--resume", str(run), "--lr", "0.1"), "--lr", "differs"
    )
    assert_clean_error(cli_run("train", "--resume", str(tmp_path)), "not a gptkit run")


def test_schedulers_are_pure_functions_of_the_step():
    cos = WarmupCosine(warmup_steps=10, initial_lr=1e-5, min_lr=1e-5)
    lrs = [cos.lr_at(s, 100, 1e-3) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-5)
    assert lrs[10] == pytest.approx(1e-3)
    assert all(a < b for a, b in pairwise(lrs[:11]))
    assert all(a >= b for a, b in pairwise(lrs[10:]))
    assert cos.lr_at(100, 100, 1e-3) == pytest.approx(1e-5)
    assert WarmupCosine(warmup=0.2).lr_at(20, 100, 1.0) == pytest.approx(1.0)
    assert Constant().lr_at(5, 10, 0.3) == 0.3
    assert Linear().lr_at(50, 100, 1.0) == pytest.approx(0.5)
    wsd = WarmupStableDecay(decay=0.2)
    assert wsd.lr_at(79, 100, 1.0) == 1.0 and wsd.lr_at(90, 100, 1.0) == pytest.approx(
        0.5
    )
