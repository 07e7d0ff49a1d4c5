"""Settings are declared once: a field of a settings dataclass is the Python
keyword, the command-line option, its validation, its place in config.json and
its rule on resume."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass

import pytest

from gptkit.core.settings import (
    ADJUSTABLE,
    GenerateSettings,
    TrainSettings,
    merge_for_resume,
    setting,
)
from gptkit.errors import SettingError


@dataclass
class WithOneMore(TrainSettings):
    """TrainSettings plus one setting, declared in this one place."""

    label_smoothing: float = setting(
        0.0, ge=0.0, le=0.5, help="A setting added by the test."
    )


COMMAND = None  # the train command built from WithOneMore (by the fixture)


@pytest.fixture
def train_with_one_more(monkeypatch):
    """``gptkit train`` built from WithOneMore, in place of the built-in one."""
    from gptkit.cli import main
    from gptkit.cli.train import make_train_command

    monkeypatch.setattr(
        sys.modules[__name__], "COMMAND", make_train_command(WithOneMore)
    )
    monkeypatch.setitem(main.BUILTIN_COMMANDS, "train", f"{__name__}:COMMAND")


def test_a_setting_added_in_one_place_reaches_help_validation_config_and_resume(
    tmp_path, cli_run, verdict_path, train_with_one_more
):
    assert "--label-smoothing FLOAT RANGE" in cli_run("train", "--help").output
    bad = cli_run("train", "--label-smoothing", "0.9")
    assert bad.exit_code == 2 and "--label-smoothing" in bad.stderr
    with pytest.raises(SettingError, match=r"^label_smoothing must be <= 0.5"):
        WithOneMore.create(label_smoothing=0.9)

    run = tmp_path / "run"
    args = ["--corpus", str(verdict_path), "--preset", "tiny", "--logger", "jsonl"]
    args += ["--context-length", "16", "--batch-size", "2", "--max-steps", "2"]
    args += ["--eval-freq", "1", "--eval-iter", "1", "--max-new-tokens", "0"]
    done = cli_run("train", *args, "--label-smoothing", "0.25", "--out", str(run))
    assert done.exit_code == 0, done.stderr
    saved = json.loads((run / "config.json").read_text())["settings"]
    assert saved["label_smoothing"] == 0.25
    refused = cli_run("train", "--resume", str(run), "--label-smoothing", "0.1")
    assert refused.exit_code == 2
    assert "--label-smoothing 0.1 differs from the run's 0.25" in refused.stderr
    resumed = cli_run("train", "--resume", str(run))
    assert resumed.exit_code == 0, resumed.stderr


def test_resume_keeps_fixed_settings_and_takes_adjustable_ones():
    saved = TrainSettings.create(lr=4e-4, keep_last=3).to_dict(saved_only=True)
    merged = merge_for_resume(TrainSettings, saved, {"keep_last": 1, "lr": 4e-4})
    assert (merged.lr, merged.keep_last) == (4e-4, 1)
    with pytest.raises(SettingError, match=r"lr 0\.001 differs from the run's 0\.0004"):
        merge_for_resume(TrainSettings, saved, {"lr": 1e-3})
    assert "keep_last" in TrainSettings.names(ADJUSTABLE)
    assert "out" not in saved and "device" not in saved  # never recorded


def test_errors_render_the_name_of_each_front_end():
    error = SettingError("{lr} must be > 0 (see {max_norm})")
    assert str(error) == "lr must be > 0 (see max_norm)"
    flags = {"lr": "--lr", "max_norm": "--max-norm"}
    assert error.render(flags.__getitem__) == "--lr must be > 0 (see --max-norm)"


@pytest.mark.parametrize(
    ("values", "fragment"),
    [
        ({"stop": ("",)}, "stop strings must not be empty"),
        ({"top_p": 0.0}, "top_p must be > 0.0"),
        ({"max_new_tokens": "many"}, "max_new_tokens: 'many' is not a valid int"),
    ],
)
def test_generate_settings_are_checked(values, fragment):
    with pytest.raises(SettingError, match=fragment):
        GenerateSettings.create(values)
