"""The Python API: the README's Python section runs as written, every name
``gptkit`` exports resolves, and the API and the command line agree."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

import gptkit
from tests.conftest import REPO, put_in_hub_cache, save_transformers_gpt2


def readme_block(heading: str) -> str:
    """The first ```python block under ``## heading`` in the README."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, f"no python block under {heading}"
    return match.group(1)


def test_every_exported_name_resolves():
    for name in gptkit.__all__:
        assert getattr(gptkit, name) is not None, name
    assert set(gptkit.__all__) <= set(dir(gptkit))
    with pytest.raises(AttributeError):
        gptkit.no_such_name  # noqa: B018


@pytest.mark.slow
def test_the_readme_python_section_runs_verbatim(
    tmp_path, monkeypatch, hf_hub_cache, capsys
):
    """The code block, unchanged, with a small GPT-2 standing in for
    openai-community/gpt2 in the Hub cache (the code path of a real download)."""
    model_dir = tmp_path / "tiny-gpt2"
    save_transformers_gpt2(
        model_dir, layout="hub", vocab_size=50257, n_positions=256, n_embd=32
    )
    put_in_hub_cache(hf_hub_cache, "openai-community/gpt2", model_dir)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["readme"])
    namespace: dict[str, object] = {}
    exec(compile(readme_block("Python API"), "README.md", "exec"), namespace)
    out = capsys.readouterr().out
    assert "LanguageModel('hf:gpt2'" in out
    run = namespace["run"]
    assert isinstance(run, gptkit.Run)
    assert (tmp_path / "runs/verdict-tiny/plots/loss.png").is_file()
    assert run.evals and run.samples and run.checkpoints
    assert len(namespace["texts"]) == 3


@pytest.mark.slow
def test_train_in_python_writes_the_metrics_of_the_command(
    tmp_path, cli_run, verdict_path
):
    """gptkit.train(...) and gptkit train with the same settings: the same
    metrics.jsonl and samples.jsonl, row for row."""
    settings = {
        "corpus": str(verdict_path),
        "preset": "tiny",
        "context_length": 32,
        "epochs": 2,
        "batch_size": 2,
        "lr": 4e-4,
        "weight_decay": 0.1,
        "eval_freq": 5,
        "eval_iter": 5,
        "seed": 123,
        "max_steps": 12,
        "max_new_tokens": 5,
        "drop_rate": 0.1,  # dropout: the RNG order matters too
    }
    args = ["train"]
    for key, value in settings.items():
        args += ["--" + key.replace("_", "-"), str(value)]
    cli = cli_run(*args, "--out", str(tmp_path / "cli"), "--logger", "jsonl")
    assert cli.exit_code == 0, cli.stderr
    run = gptkit.train(out=str(tmp_path / "py"), loggers=["jsonl"], **settings)
    for name in ("metrics.jsonl", "samples.jsonl"):
        assert (tmp_path / "py" / name).read_text() == (
            tmp_path / "cli" / name
        ).read_text()
    assert run.summary["steps"] == 12
    saved = json.loads((tmp_path / "py/config.json").read_text())["settings"]
    assert saved == json.loads((tmp_path / "cli/config.json").read_text())["settings"]


def test_errors_name_the_keyword_in_python(tmp_path):
    with pytest.raises(gptkit.SettingError, match=r"^lr must be > 0.0, got -1.0$"):
        gptkit.train(lr=-1.0, out=str(tmp_path / "x"))
    with pytest.raises(gptkit.SettingError, match="unknown setting bogus"):
        gptkit.train(bogus=1)
    assert not (tmp_path / "x").exists()


_SETTINGS = (
    "dict(preset='tiny', context_length=32, batch_size=2, drop_rate=0.1,"
    " eval_freq=2, eval_iter=2, max_new_tokens=3, max_steps=12,"
    " checkpoint_every=3, loggers=['jsonl'], corpus={corpus!r})"
)


def _python(code: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{REPO}"}
    return subprocess.Popen(
        [sys.executable, "-c", code],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


@pytest.mark.slow
def test_resume_through_the_api_after_a_kill_equals_an_uninterrupted_run(
    tmp_path, verdict_path
):
    settings = _SETTINGS.format(corpus=str(verdict_path))
    killed, reference = tmp_path / "killed", tmp_path / "reference"
    train = "import gptkit; gptkit.train(out={out!r}, **" + settings + ")"
    first = _python(train.format(out=str(killed)))
    ref = _python(train.format(out=str(reference)))
    deadline = time.monotonic() + 600
    while not (killed / "checkpoints" / "step-000006").is_dir():
        assert first.poll() is None, first.stderr.read().decode()
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)
    first.send_signal(signal.SIGKILL)
    first.wait(60)
    assert ref.wait(600) == 0, ref.stderr.read().decode()
    resumed = _python(f"import gptkit; gptkit.resume({str(killed)!r})")
    assert resumed.wait(600) == 0, resumed.stderr.read().decode()
    for name in ("metrics.jsonl", "samples.jsonl"):
        assert (killed / name).read_text() == (reference / name).read_text()
    run = gptkit.Run.open(killed)
    assert run.summary["steps"] == 12 and len(run.evals) == 6


def test_run_files_are_written_whatever_loggers_are_chosen(tmp_path, verdict_path):
    """metrics.jsonl and samples.jsonl are the run's record, not a logger's:
    a run logged to the console only reads back the same rows."""
    settings = {
        "corpus": str(verdict_path),
        "preset": "tiny",
        "context_length": 32,
        "batch_size": 2,
        "eval_freq": 2,
        "eval_iter": 1,
        "max_steps": 4,
        "max_new_tokens": 3,
    }
    quiet = gptkit.train(out=str(tmp_path / "quiet"), loggers=["jsonl"], **settings)
    console = gptkit.train(
        out=str(tmp_path / "console"), loggers=["console"], **settings
    )
    assert len(console.steps) == 4 and console.evals and console.samples
    assert console.metrics == quiet.metrics
    assert console.samples == quiet.samples
