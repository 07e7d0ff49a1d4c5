"""The training loop: the book's ``train_model_simple`` (chapter 5) with the
pieces of appendix D (learning-rate schedule, gradient clipping) and the plumbing
a real run needs (gradient accumulation, checkpoints, interruption, loggers).

Step numbering follows the book: ``step`` in logged rows is the 0-based index of
the optimizer step just taken, and an evaluation runs when ``step % eval_freq ==
0``. Checkpoint directories are named after the number of steps completed.
"""

from __future__ import annotations

import math
import random
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gptkit.core.checkpoint import latest_checkpoint, save_checkpoint
from gptkit.core.data import DataSplits
from gptkit.core.errors import GptkitError
from gptkit.core.generate import generate_tokens
from gptkit.core.interfaces import Logger, RunInfo, Scheduler
from gptkit.core.loss import batch_loss, loader_loss
from gptkit.core.model import GPTModel
from gptkit.core.tokenizer import decode, encode


@dataclass
class TrainSettings:
    """Optimisation and bookkeeping settings (the book's names)."""

    epochs: int = 10
    lr: float = 4e-4
    weight_decay: float = 0.1
    eval_freq: int = 5
    eval_iter: int | None = 5
    start_context: str | None = "Every effort moves you"
    sample_tokens: int = 50
    max_norm: float | None = None
    grad_accum: int = 1
    max_steps: int | None = None
    checkpoint_every: int | None = None
    keep_last: int | None = None

    def validate(self) -> None:
        checks = [
            (self.epochs >= 1, "--epochs must be at least 1"),
            (self.lr > 0, f"--lr must be positive, got {self.lr}"),
            (self.weight_decay >= 0, "--weight-decay must be >= 0"),
            (self.eval_freq >= 1, "--eval-freq must be at least 1"),
            (self.eval_iter is None or self.eval_iter >= 1, "--eval-iter must be >= 1"),
            (self.sample_tokens >= 0, "--max-new-tokens must be >= 0"),
            (self.max_norm is None or self.max_norm > 0, "--max-norm must be positive"),
            (self.grad_accum >= 1, "--grad-accum must be at least 1"),
            (self.max_steps is None or self.max_steps >= 1, "--max-steps must be >= 1"),
            (
                self.checkpoint_every is None or self.checkpoint_every >= 1,
                "--checkpoint-every must be at least 1",
            ),
            (self.keep_last is None or self.keep_last >= 1, "--keep-last must be >= 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise GptkitError(message)


class TrainingInterrupted(GptkitError):
    """SIGINT/SIGTERM: the run stopped at a step boundary after saving."""


class _StopFlag:
    """Turns SIGINT/SIGTERM into a flag the loop checks between steps."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopFlag:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signal is not None:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.signal = signum

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def rng_state() -> dict[str, Any]:
    """Every random state the run depends on (tensors and plain lists only)."""
    py_version, py_state, py_gauss = random.getstate()
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": [py_version, list(py_state), py_gauss],
        "numpy": [
            np_state[0],
            torch.from_numpy(np_state[1].astype(np.int64)),
            *np_state[2:],
        ],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, py_state, gauss = state["python"]
    random.setstate((version, tuple(py_state), gauss))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Trainer:
    """Trains ``model`` on ``data``; reports to ``loggers``; writes checkpoints
    under ``run_dir/checkpoints``."""

    def __init__(
        self,
        model: GPTModel,
        data: DataSplits,
        settings: TrainSettings,
        *,
        device: torch.device,
        scheduler: Scheduler,
        loggers: Sequence[Logger] = (),
        run_dir: Path | None = None,
        run_config: dict[str, Any] | None = None,
    ) -> None:
        settings.validate()
        self.model = model
        self.data = data
        self.settings = settings
        self.device = device
        self.scheduler = scheduler
        self.loggers = list(loggers)
        self.run_dir = run_dir
        self.run_config = run_config or {}
        self.steps_per_epoch = len(data.train_loader) // settings.grad_accum
        if self.steps_per_epoch < 1:
            raise GptkitError(
                f"--grad-accum {settings.grad_accum} is more than the"
                f" {len(data.train_loader)} batches of an epoch"
            )
        self.total_steps = settings.epochs * self.steps_per_epoch
        if settings.max_steps is not None:
            self.total_steps = min(self.total_steps, settings.max_steps)
        fused = device.type == "cuda"
        self.optimizer = torch.optim.AdamW(
            model.parameters(),
            lr=settings.lr,
            weight_decay=settings.weight_decay,
            fused=fused or None,
        )
        # Loop position: steps completed, epoch (0-based), batches of it consumed.
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.tokens_seen = 0
        self.last_checkpoint: Path | None = None

    # -- state ---------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "tokens_seen": self.tokens_seen,
            "rng": rng_state(),
            "settings": asdict(self.settings),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
        self.epoch = int(state["epoch"])
        self.batch_in_epoch = int(state["batch_in_epoch"])
        self.tokens_seen = int(state["tokens_seen"])
        set_rng_state(state["rng"])

    def save(self) -> Path | None:
        if self.run_dir is None:
            return None
        path = save_checkpoint(
            self.run_dir / "checkpoints",
            self.step,
            self.model,
            self.model.cfg,
            trainer_state=self.state_dict(),
            info={"epoch": self.epoch, "tokens_seen": self.tokens_seen},
            keep_last=self.settings.keep_last,
        )
        self.last_checkpoint = path
        self._tell(f"saved checkpoint {path}")
        return path

    # -- the loop ------------------------------------------------------------

    def _tell(self, text: str) -> None:
        for logger in self.loggers:
            logger.message(text)

    def evaluate(self) -> tuple[float, float]:
        """Training and validation loss over ``eval_iter`` batches (book's
        ``evaluate_model``); training batches in their fixed order."""
        self.model.eval()
        n = self.settings.eval_iter
        train = loader_loss(self.data.train_eval_loader, self.model, self.device, n)
        val = loader_loss(self.data.val_loader, self.model, self.device, n)
        self.model.train()
        return train, val

    def sample(self) -> str:
        """Greedy continuation of ``start_context`` (the per-epoch sample)."""
        from gptkit.core.registry import get_registry

        greedy = get_registry().samplers.create("greedy")
        result = generate_tokens(
            self.model,
            [encode(self.settings.start_context)],
            greedy,
            max_new_tokens=self.settings.sample_tokens,
        )[0]
        return self.settings.start_context + decode(result.new_ids)

    def _lr(self) -> float:
        lr = self.scheduler.lr_at(self.step, self.total_steps, self.settings.lr)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def fit(self) -> dict[str, Any]:
        """Train to the end (or until interrupted); return a summary."""
        info = RunInfo(
            run_dir=self.run_dir,
            config=self.run_config,
            total_steps=self.total_steps,
            steps_per_epoch=self.steps_per_epoch,
            epochs=self.settings.epochs,
            num_parameters=sum(p.numel() for p in self.model.parameters()),
            train_tokens=self.data.train_tokens,
            val_tokens=self.data.val_tokens,
            start_step=self.step,
        )
        for logger in self.loggers:
            logger.start(info)
        started = time.perf_counter()
        last_eval: dict[str, Any] = {}
        status = "completed"
        try:
            with _StopFlag() as stop:
                last_eval = self._run(stop)
                if stop.signal is not None:
                    status = "interrupted"
            self.save()
        except BaseException:
            status = "failed"
            raise
        finally:
            summary = {
                "status": status,
                "steps": self.step,
                "epochs": self.epoch,
                "tokens_seen": self.tokens_seen,
                "seconds": round(time.perf_counter() - started, 3),
                "checkpoint": str(self.last_checkpoint)
                if self.last_checkpoint
                else None,
                **last_eval,
            }
            for logger in self.loggers:
                logger.finish(summary)
        if status == "interrupted":
            raise TrainingInterrupted(
                f"interrupted at step {self.step}; checkpoint saved in"
                f" {self.last_checkpoint}; continue with --resume"
            )
        return summary

    def _run(self, stop: _StopFlag) -> dict[str, Any]:
        s = self.settings
        model, loader = self.model, self.data.train_loader
        model.train()
        last_eval: dict[str, Any] = {}
        while self.epoch < s.epochs and self.step < self.total_steps:
            self.data.train_sampler.set_epoch(
                self.epoch, self.batch_in_epoch * loader.batch_size
            )
            batches = iter(loader)
            while (
                self.batch_in_epoch + s.grad_accum
                <= self.steps_per_epoch * s.grad_accum
            ):
                lr = self._lr()
                self.optimizer.zero_grad(set_to_none=True)
                total = 0.0
                for _ in range(s.grad_accum):
                    inputs, targets = next(batches)
                    loss = batch_loss(inputs, targets, model, self.device)
                    (loss / s.grad_accum).backward()
                    total += loss.item()
                    self.tokens_seen += inputs.numel()
                loss_value = total / s.grad_accum
                if not math.isfinite(loss_value):
                    kept = (
                        latest_checkpoint(self.run_dir / "checkpoints")
                        if self.run_dir
                        else None
                    )
                    raise GptkitError(
                        f"the loss became {loss_value} at step {self.step}; stopping"
                        + (f" (last good checkpoint: {kept})" if kept else "")
                        + "; try a lower --lr or --max-norm"
                    )
                if s.max_norm is not None:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), s.max_norm)
                self.optimizer.step()
                self.batch_in_epoch += s.grad_accum
                self.step += 1
                global_step = self.step - 1
                row = {
                    "step": global_step,
                    "epoch": self.epoch + 1,
                    "tokens_seen": self.tokens_seen,
                    "lr": lr,
                    "loss": loss_value,
                }
                for logger in self.loggers:
                    logger.log_step(row)
                if global_step % s.eval_freq == 0:
                    train_loss, val_loss = self.evaluate()
                    last_eval = {"train_loss": train_loss, "val_loss": val_loss}
                    eval_row = {
                        "step": global_step,
                        "epoch": self.epoch + 1,
                        "tokens_seen": self.tokens_seen,
                        **last_eval,
                    }
                    for logger in self.loggers:
                        logger.log_eval(eval_row)
                if s.checkpoint_every and self.step % s.checkpoint_every == 0:
                    self.save()
                if stop.signal is not None or self.step >= self.total_steps:
                    break
            if stop.signal is not None:
                return last_eval
            epoch_done = self.batch_in_epoch >= self.steps_per_epoch * s.grad_accum
            if epoch_done or self.step >= self.total_steps:
                self._epoch_sample()
            if epoch_done:
                self.epoch += 1
                self.batch_in_epoch = 0
        return last_eval

    def _epoch_sample(self) -> None:
        if not self.settings.start_context or self.settings.sample_tokens == 0:
            return
        text = self.sample()
        row = {
            "epoch": self.epoch + 1,
            "step": self.step - 1,
            "tokens_seen": self.tokens_seen,
            "prompt": self.settings.start_context,
            "text": text,
        }
        for logger in self.loggers:
            logger.log_sample(row)
