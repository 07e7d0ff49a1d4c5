"""The built-in csv and tensorboard loggers: the logger contract, their files,
resuming, and a clear error when tensorboard is not installed."""

from __future__ import annotations

import csv
import math
import sys

import pytest

from gptkit.core.interfaces import RunInfo
from gptkit.core.registry import build_registry
from gptkit.errors import GptkitError
from gptkit.testing import check_logger
from tests.conftest import assert_clean_error


def _logger(name: str, **options):
    return build_registry(entry_points=False).loggers.create(name, **options)


def _read(path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_builtin_loggers_are_registered():
    names = build_registry(entry_points=False).loggers.names()
    assert {"console", "jsonl", "plot", "csv", "tensorboard"} <= set(names)


def test_csv_one_row_per_step_with_eval_losses_on_their_step(gptkit_run_dir):
    # check_logger: 6 steps, evaluations at steps 0, 2, 4, resumed at step 3.
    files = check_logger(_logger("csv"), gptkit_run_dir, steps=6, eval_freq=2)
    assert files == [gptkit_run_dir / "metrics.csv"]
    rows = _read(files[0])
    assert list(rows[0]) == [
        "step",
        "epoch",
        "tokens_seen",
        "lr",
        "loss",
        "train_loss",
        "val_loss",
    ]
    assert [int(r["step"]) for r in rows] == [0, 1, 2, 3, 4, 5]  # no duplicates
    assert [r["val_loss"] != "" for r in rows] == [1, 0, 1, 0, 1, 0]
    assert float(rows[2]["loss"]) == pytest.approx(10 / 3)
    assert float(rows[2]["val_loss"]) == pytest.approx(10 / 3 + 0.5)
    assert float(rows[5]["tokens_seen"]) == 6 * 64


def test_csv_evals_only(gptkit_run_dir):
    check_logger(_logger("csv", rows="evals"), gptkit_run_dir, steps=6)
    rows = _read(gptkit_run_dir / "metrics.csv")
    assert [int(r["step"]) for r in rows] == [0, 2, 4]
    assert all(r["lr"] and r["loss"] and r["train_loss"] for r in rows)


def test_csv_resume_drops_rows_past_the_checkpoint(gptkit_run_dir):
    path = gptkit_run_dir / "metrics.csv"
    logger = _logger("csv")
    info = RunInfo(gptkit_run_dir, {}, 10, 5, 2, 1, 1, 1)
    logger.start(info)
    for step in range(7):  # the run got to step 6, its checkpoint is at 4
        logger.log_step(
            {"step": step, "epoch": 1, "tokens_seen": 0, "lr": 1, "loss": 1}
        )
    logger.finish({})
    with open(path, "a", encoding="utf-8") as f:
        f.write("7,1,0,1")  # a torn last line
    info.start_step = 4
    logger.start(info)
    logger.log_step({"step": 4, "epoch": 1, "tokens_seen": 0, "lr": 2, "loss": 2})
    logger.finish({})
    rows = _read(path)
    assert [(r["step"], r["lr"]) for r in rows] == [
        ("0", "1"),
        ("1", "1"),
        ("2", "1"),
        ("3", "1"),
        ("4", "2"),
    ]


def test_csv_option_is_validated():
    with pytest.raises(GptkitError, match="rows of logger csv must be one of steps"):
        _logger("csv", rows="epochs")


def test_tensorboard_missing_is_a_clear_error(monkeypatch, cli_run):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # not importable
    with pytest.raises(GptkitError, match=r"pip install 'gptkit\[tensorboard\]'"):
        _logger("tensorboard")
    assert_clean_error(
        cli_run("train", "--logger", "tensorboard"), "gptkit[tensorboard]"
    )


def test_tensorboard_writes_scalars_and_purges_on_resume(gptkit_run_dir):
    pytest.importorskip("tensorboard", reason="pip install 'gptkit[tensorboard]'")
    from tensorboard.backend.event_processing.event_accumulator import (
        EventAccumulator,
    )

    files = check_logger(_logger("tensorboard"), gptkit_run_dir, steps=6)
    assert files and all(p.parent.name == "tensorboard" for p in files)
    events = EventAccumulator(str(gptkit_run_dir / "tensorboard"))
    events.Reload()
    scalars = events.Tags()["scalars"]
    assert {"train/loss", "train/lr", "loss/train", "loss/val"} <= set(scalars)
    assert {"perplexity/train", "perplexity/val"} <= set(scalars)
    # Steps 3-5 were logged again after the resume and must appear once.
    assert [e.step for e in events.Scalars("train/loss")] == [0, 1, 2, 3, 4, 5]
    assert [e.step for e in events.Scalars("loss/val")] == [0, 2, 4]
    [val_at_2] = [e for e in events.Scalars("perplexity/val") if e.step == 2]
    assert val_at_2.value == pytest.approx(math.exp(10 / 3 + 0.5), rel=1e-5)
    assert "sample/text_summary" in events.Tags()["tensors"]
