"""Stopping early: SIGTERM/SIGINT stop at a step boundary with a checkpoint
(a second, different signal, as torchrun sends, does not abort the save), and a
NaN loss stops the run naming the last good checkpoint."""

from __future__ import annotations

import math
import os
import signal

import pytest
import torch

from gptkit.core.checkpoints.layout import list_checkpoints
from gptkit.core.checkpoints.native import load_trainer_state
from gptkit.core.config import get_preset
from gptkit.core.data import make_loaders
from gptkit.core.interfaces import Logger
from gptkit.core.model import GPTModel
from gptkit.core.settings import TrainSettings
from gptkit.core.training import trainer as train_module
from gptkit.core.training.trainer import Trainer, TrainingInterrupted
from gptkit.errors import GptkitError
from gptkit.plugins.schedulers.schedules import Constant


class SignalAt(Logger):
    """Sends signals to this process after a given step."""

    name = "signal-at"

    def __init__(self, step: int, signals: list[int]) -> None:
        super().__init__()
        self.at, self.signals = step, signals

    def log_step(self, row: dict) -> None:
        if row["step"] == self.at:
            for sig in self.signals:
                os.kill(os.getpid(), sig)


def trainer(verdict_text, tmp_path, loggers=(), **settings) -> Trainer:
    torch.manual_seed(0)
    model = GPTModel(get_preset("tiny").replace(context_length=16))
    data = make_loaders(verdict_text, context_length=16, batch_size=2)
    return Trainer(
        model,
        data,
        TrainSettings(eval_iter=1, eval_freq=100, max_new_tokens=0, **settings),
        device=torch.device("cpu"),
        scheduler=Constant(),
        loggers=loggers,
        run_dir=tmp_path,
    )


@pytest.mark.parametrize(
    "signals",
    [[signal.SIGTERM], [signal.SIGINT], [signal.SIGINT, signal.SIGTERM]],
)
def test_a_signal_stops_at_the_step_boundary_and_saves(verdict_text, tmp_path, signals):
    t = trainer(verdict_text, tmp_path, [SignalAt(2, signals)], max_steps=50)
    with pytest.raises(TrainingInterrupted, match="interrupted at step 3"):
        t.fit()
    [ckpt] = list_checkpoints(tmp_path / "checkpoints")
    assert ckpt.name == "step-000003"
    assert load_trainer_state(ckpt)["step"] == 3
    assert signal.getsignal(signal.SIGTERM) is not None  # handlers restored


def test_a_nan_loss_stops_the_run_and_names_the_last_good_checkpoint(
    verdict_text, tmp_path, monkeypatch
):
    real = train_module.batch_loss
    calls = []

    def nan_on_fifth(*args, **kwargs):
        calls.append(1)
        loss = real(*args, **kwargs)
        return loss * math.nan if len(calls) == 5 else loss

    monkeypatch.setattr(train_module, "batch_loss", nan_on_fifth)
    t = trainer(verdict_text, tmp_path, max_steps=10, checkpoint_every=2)
    with pytest.raises(GptkitError, match=r"loss became nan at step 4.*step-000004"):
        t.fit()
    assert [p.name for p in list_checkpoints(tmp_path / "checkpoints")] == [
        "step-000002",
        "step-000004",
    ]
