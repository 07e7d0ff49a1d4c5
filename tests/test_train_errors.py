"""Bad input to ``gptkit train`` and ``gptkit prepare``: one clear line on
stderr, exit code 2, and nothing in the run or corpus directory changed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from tests.conftest import assert_clean_error

TINY = [
    "--preset",
    "tiny",
    "--context-length",
    "16",
    "--batch-size",
    "2",
    "--eval-freq",
    "1",
    "--eval-iter",
    "1",
    "--max-new-tokens",
    "0",
    "--logger",
    "jsonl",
]


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory`` (hidden ones too) and its bytes."""
    return {
        str(p.relative_to(directory)): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, verdict_path):
    """A short run with two checkpoints (steps 2 and 3)."""
    from click.testing import CliRunner

    from gptkit.cli.main import cli

    out = tmp_path_factory.mktemp("errors") / "run"
    args = ["train", "--corpus", str(verdict_path), *TINY, "--max-steps", "3"]
    result = CliRunner().invoke(
        cli, [*args, "--checkpoint-every", "2", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture
def run_copy(finished_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(finished_run, copy)
    return copy


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--data", "x", "--corpus", "the-verdict"], "--data and --corpus"),
        (["--data", "x", "--train-ratio", "0.5"], "--train-ratio is fixed"),
        (["--resume", "r", "--out", "o"], "drop --out"),
        (["--precision", "fp8"], "Invalid value for '--precision'"),
    ],
)
def test_conflicting_flags(cli_run, tmp_path, args, fragment):
    assert_clean_error(cli_run("train", *args), fragment)
    assert not any(tmp_path.iterdir())


def test_resume_of_a_directory_that_is_not_a_run(cli_run, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    before = snapshot(tmp_path)
    assert_clean_error(
        cli_run("train", "--resume", str(tmp_path)), "not a gptkit run directory"
    )
    assert snapshot(tmp_path) == before


def test_resume_with_a_different_setting_names_it(cli_run, run_copy):
    before = snapshot(run_copy)
    result = cli_run("train", "--resume", str(run_copy), "--precision", "bf16-mixed")
    assert_clean_error(result, "--precision bf16-mixed differs from the run's fp32")
    # The run's config.json disagrees with its checkpoint: say which setting.
    config = json.loads((run_copy / "config.json").read_text())
    config["settings"]["drop_rate"] = 0.25
    (run_copy / "config.json").write_text(json.dumps(config))
    before = snapshot(run_copy)
    result = cli_run("train", "--resume", str(run_copy))
    assert_clean_error(result, "drop_rate=0.0", "drop_rate=0.25")
    assert snapshot(run_copy) == before


@pytest.mark.parametrize(
    ("file", "damage", "fragment"),
    [
        ("model.safetensors", "truncate", "corrupt checkpoint weights"),
        ("trainer_state.pt", "garbage", "corrupt or unsafe"),
        ("config.json", "garbage", "corrupt"),
    ],
)
def test_a_damaged_newest_checkpoint_is_set_aside_and_the_older_one_resumed(
    cli_run, run_copy, file, damage, fragment
):
    path = run_copy / "checkpoints" / "step-000003" / file
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:1000])
    else:
        path.write_bytes(b"\x00not what it should be")
    damaged = snapshot(run_copy / "checkpoints" / "step-000003")
    result = cli_run("train", "--resume", str(run_copy))
    assert result.exit_code == 0, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("gptkit: checkpoint step-000003 is damaged (")
    assert fragment in lines[0]
    assert lines[1] == "gptkit: resuming from the older step-000002"
    # Kept for a look under another name; the run went on to write step 3 again.
    assert snapshot(run_copy / "checkpoints" / "damaged-step-000003") == damaged
    assert (run_copy / "checkpoints" / "step-000003" / "trainer_state.pt").is_file()


def test_a_checkpoint_of_another_process_count_is_refused(cli_run, run_copy):
    path = run_copy / "checkpoints" / "step-000003" / "trainer_state.pt"
    state = torch.load(path, weights_only=True)
    state["world_size"] = 2
    torch.save(state, path)
    before = snapshot(run_copy)
    result = cli_run("train", "--resume", str(run_copy))
    assert_clean_error(result, "trained by 2 process(es)")
    assert snapshot(run_copy) == before


def test_a_corpus_directory_without_metadata(cli_run, tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "tokens.bin").write_bytes(b"\x00" * 64)
    out = tmp_path / "out"
    result = cli_run("train", "--data", str(corpus), *TINY, "--out", str(out))
    assert_clean_error(result, "is not a prepared corpus", "gptkit prepare")
    assert not out.exists()
    (corpus / "meta.json").write_text('{"format": "something else"}')
    result = cli_run("train", "--data", str(corpus), *TINY, "--out", str(out))
    assert_clean_error(result, "is not a gptkit prepared-corpus meta.json")
    assert not out.exists()


def test_prepare_never_overwrites_another_directory(cli_run, tmp_path, verdict_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    result = cli_run("prepare", str(verdict_path), "--out", str(out))
    assert_clean_error(result, "is not a gptkit prepare directory")
    assert snapshot(out) == {"keep.txt": b"precious"}


def test_resuming_a_finished_run_saves_no_checkpoint_again(cli_run, run_copy):
    before = snapshot(run_copy / "checkpoints")
    result = cli_run("train", "--resume", str(run_copy))
    assert result.exit_code == 0, result.output
    assert "saved checkpoint" not in result.output + result.stderr
    assert snapshot(run_copy / "checkpoints") == before
