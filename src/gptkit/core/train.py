"""The training loop: the book's ``train_model_simple`` (chapter 5) with the
pieces of appendix D (learning-rate schedule, gradient clipping) and the plumbing
a real run needs (gradient accumulation, mixed precision, ``torch.compile``,
DistributedDataParallel, checkpoints, interruption, loggers).

Mixed precision is ``torch.autocast`` (bf16 or fp16 matrix products, fp32
weights and optimizer) with a gradient scaler for fp16 (Micikevicius et al.,
2018, "Mixed precision training"). Under DDP (a process group started by
torchrun) every process trains on its shard of each global batch, the gradients
are averaged by DDP, the logged loss and the evaluation are averaged over the
processes, and only rank 0 logs and writes checkpoints.

Step numbering follows the book: ``step`` in logged rows is the 0-based index of
the optimizer step just taken, and an evaluation runs when ``step % eval_freq ==
0``. Checkpoint directories are named after the number of steps completed.
"""

from __future__ import annotations

import contextlib
import math
import random
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gptkit.core.checkpoint import latest_checkpoint, save_checkpoint
from gptkit.core.data import DataSplits, eval_batches
from gptkit.core.distributed import (
    DistContext,
    all_gather_objects,
    all_reduce_sum,
    broadcast_object,
)
from gptkit.core.errors import GptkitError, SettingError
from gptkit.core.generate import generate_tokens
from gptkit.core.interfaces import Logger, RunInfo, Scheduler
from gptkit.core.loss import batch_loss, loader_loss
from gptkit.core.model import GPTModel
from gptkit.core.settings import TrainSettings
from gptkit.core.tokenizer import decode, encode

#: Precision settings and the autocast dtype of each (None: plain fp32).
PRECISIONS: dict[str, torch.dtype | None] = {
    "fp32": None,
    "bf16-mixed": torch.bfloat16,
    "fp16-mixed": torch.float16,
}


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
        # A second Ctrl-C stops now. A different signal does not: torchrun's
        # agent sends SIGTERM to workers that already got the terminal's SIGINT.
        if self.signal == signum:
            raise KeyboardInterrupt
        if self.signal is None:
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


def make_adamw(params: Any, *, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW (Loshchilov & Hutter, 2019), with the fused implementation (one
    kernel for the whole update) where the device has one: CUDA, and the CPU
    since PyTorch 2.4, where it is several times faster than the per-tensor
    loop. Falls back to PyTorch's default implementation elsewhere."""
    params = list(params)
    try:
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


class Trainer:
    """Trains ``model`` on ``data``; reports to ``loggers``; writes checkpoints
    under ``run_dir/checkpoints``.

    ``dist`` describes the process group when torchrun started several
    processes: the model is then wrapped in DistributedDataParallel, and only
    rank 0 should be given loggers (it alone writes checkpoints).
    """

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
        dist: DistContext | None = None,
    ) -> None:
        settings.validate()
        if settings.precision not in PRECISIONS:
            raise SettingError(
                f"{{precision}} {settings.precision!r} is not supported by this"
                f" trainer; choose one of {', '.join(PRECISIONS)}"
            )
        self.model = model
        self.data = data
        self.settings = settings
        self.device = device
        self.scheduler = scheduler
        self.loggers = list(loggers)
        self.run_dir = run_dir
        self.run_config = run_config or {}
        self.dist = dist or DistContext()
        self.steps_per_epoch = len(data.train_loader) // settings.grad_accum
        if self.steps_per_epoch < 1:
            raise SettingError(
                f"{{grad_accum}} {settings.grad_accum} is more than the"
                f" {len(data.train_loader)} batches of an epoch"
            )
        self.total_steps = settings.epochs * self.steps_per_epoch
        if settings.max_steps is not None:
            self.total_steps = min(self.total_steps, settings.max_steps)
        self.autocast_dtype = PRECISIONS[settings.precision]
        self.scaler = self._grad_scaler()
        self.optimizer = make_adamw(
            model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay
        )
        self._ddp: torch.nn.Module | None = None
        self.train_model = self._wrap(model)
        # Loop position: steps completed, epoch (0-based), batches of it consumed
        # (by this process).
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.tokens_seen = 0
        self._rng_after_iter: dict[str, Any] | None = None
        self.last_checkpoint: Path | None = None
        self.stop_requested = False

    # -- set-up ----------------------------------------------------------------

    def _grad_scaler(self) -> torch.amp.GradScaler:
        """Check the precision fits the device; a gradient scaler for fp16 (a
        disabled one, whose calls do nothing, otherwise)."""
        device_type = self.device.type
        precision = self.settings.precision
        if self.autocast_dtype is not None:
            if not torch.amp.is_autocast_available(device_type):
                raise SettingError(
                    f"{{precision}} {precision}: no autocast on {device_type}"
                )
            if (
                device_type == "cuda"
                and self.autocast_dtype is torch.bfloat16
                and not torch.cuda.is_bf16_supported()
            ):
                raise SettingError(
                    "{precision} bf16-mixed: this GPU has no bfloat16; use fp16-mixed"
                )
        try:
            return torch.amp.GradScaler(device_type, enabled=precision == "fp16-mixed")
        except (RuntimeError, AttributeError, TypeError) as exc:
            raise SettingError(
                f"{{precision}} {precision}: no gradient scaler on {device_type}"
                f" ({exc})"
            ) from None

    def _wrap(self, model: GPTModel) -> torch.nn.Module:
        """The module the training steps call: DDP around the model under
        torchrun, then ``torch.compile`` around that with the ``compile`` setting. The
        plain model stays ``self.model``: checkpoints store its keys (no
        ``module.`` or ``_orig_mod.`` prefixes), evaluation and samples use it."""
        wrapped: torch.nn.Module = model
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            wrapped = self._ddp = DistributedDataParallel(model, device_ids=ids)
        if self.settings.compile:
            wrapped = torch.compile(wrapped)  # type: ignore[assignment]
        return wrapped

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def _no_sync(self, sync: bool) -> contextlib.AbstractContextManager[Any]:
        """DDP's ``no_sync`` for the micro-batches of an accumulation that do
        not end it (their gradients are summed locally, reduced once)."""
        if self._ddp is None or sync:
            return contextlib.nullcontext()
        return self._ddp.no_sync()  # type: ignore[operator]

    # -- state ---------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Optimizer, grad scaler, loop position and RNG states (every
        process's under DDP: call it on all processes)."""
        rng = rng_state()
        state = {
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "tokens_seen": self.tokens_seen,
            "rng": rng,
            "world_size": self.dist.world_size,
            "settings": asdict(self.settings),
        }
        state.update(self.data.train_sampler.state())  # the current pass's order
        if self.dist.enabled:
            state["rng_per_rank"] = all_gather_objects(rng, self.dist)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        world = int(state.get("world_size", 1))
        if world != self.dist.world_size:
            raise GptkitError(
                f"the run was trained by {world} process(es) and this is"
                f" {self.dist.world_size}; resume it with as many processes"
            )
        self.optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        self.epoch = int(state["epoch"])
        self.batch_in_epoch = int(state["batch_in_epoch"])
        self.tokens_seen = int(state["tokens_seen"])
        per_rank = state.get("rng_per_rank")
        rng = per_rank[self.dist.rank] if per_rank else state["rng"]
        set_rng_state(rng)
        if self.batch_in_epoch > 0:
            # Mid-epoch: continue this pass's order, and restore the RNG again
            # once the loader's new iterator has drawn its seed (the interrupted
            # run drew it when the epoch began, before this checkpoint).
            skip = self.batch_in_epoch * self.data.train_loader.batch_size
            self.data.train_sampler.restore(state, skip)
            self._rng_after_iter = rng

    def save(self) -> Path | None:
        """Write a checkpoint (rank 0); every process learns whether it worked."""
        if self.run_dir is None:
            return None
        state = self.state_dict()
        outcome: tuple[str | None, str | None] = (None, None)
        if self.dist.is_main:
            try:
                path = save_checkpoint(
                    self.run_dir / "checkpoints",
                    self.step,
                    self.model,
                    self.model.cfg,
                    trainer_state=state,
                    info={"epoch": self.epoch, "tokens_seen": self.tokens_seen},
                    keep_last=self.settings.keep_last,
                )
                outcome = (str(path), None)
            except GptkitError as exc:
                outcome = (None, str(exc))
        saved, error = broadcast_object(outcome, self.dist)
        if error is not None:
            raise GptkitError(error)
        self.last_checkpoint = Path(saved) if saved else None
        self.tell(f"saved checkpoint {saved}")
        return self.last_checkpoint

    # -- the loop ------------------------------------------------------------

    def tell(self, text: str) -> None:
        """A line of information for the user, through the loggers."""
        for logger in self.loggers:
            logger.message(text)

    def evaluate(self) -> tuple[float, float]:
        """Training and validation loss over ``eval_iter`` batches (book's
        ``evaluate_model``); training batches in their fixed order. Under DDP
        each process computes its share of every batch and the sums are
        reduced, so all processes get the single-process numbers."""
        self.model.eval()
        n = self.settings.eval_iter
        with self._autocast():
            if self.dist.enabled:
                train = self._sharded_loss(self.data.train_eval_loader, n)
                val = self._sharded_loss(self.data.val_loader, n)
            else:
                train = loader_loss(
                    self.data.train_eval_loader, self.model, self.device, n
                )
                val = loader_loss(self.data.val_loader, self.model, self.device, n)
        self.model.train()
        return train, val

    @torch.no_grad()
    def _sharded_loss(
        self, loader: torch.utils.data.DataLoader, limit: int | None
    ) -> float:
        """Mean batch loss over the first ``limit`` global batches of
        ``loader``; this process evaluates rows ``rank::world_size`` of each."""
        import torch.nn.functional as F

        rank, world = self.dist.rank, self.dist.world_size
        count = eval_batches(loader, limit)
        sums = torch.zeros(count, 2, dtype=torch.float64)  # (loss sum, tokens)
        for i, (inputs, targets) in enumerate(loader):
            if i >= count:
                break
            x, y = inputs[rank::world], targets[rank::world]
            if len(x) == 0:
                continue
            logits = self.model(x.to(self.device))  # (b, T, V)
            sums[i, 0] = F.cross_entropy(
                logits.flatten(0, 1).float(),
                y.to(self.device).flatten(),
                reduction="sum",
            ).item()
            sums[i, 1] = y.numel()
        sums = all_reduce_sum(sums, self.device)
        if count == 0:
            return float("nan")
        return float((sums[:, 0] / sums[:, 1]).mean())

    def sample(self) -> str:
        """The continuation of ``start_context`` by the ``sampler`` setting (the
        book's greedy ``generate_text_simple`` by default): the per-epoch sample."""
        from gptkit.core.registry import get_registry

        assert self.settings.start_context is not None
        sampler = get_registry().samplers.create(self.settings.sampler)
        result = generate_tokens(
            self.model,
            [encode(self.settings.start_context)],
            sampler,
            max_new_tokens=self.settings.max_new_tokens,
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
                if self.stop_requested:
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
                f" {self.last_checkpoint}; continue it with resume"
            )
        return summary

    def train_step(self, batches: Iterator[Any], *, stop: bool = False) -> float:
        """One optimizer step over the next ``grad_accum`` batches of
        ``batches`` (forward and backward under autocast, DDP's gradient
        averaging, clipping, the grad scaler, AdamW). Returns the mean batch
        loss over all processes; ``stop``: this process was asked to stop
        (sets ``stop_requested`` when any process was)."""
        loss, self.stop_requested = self._agree(self._forward_backward(batches), stop)
        self._check_finite(loss)
        if self.settings.max_norm is not None:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(
                self.model.parameters(), self.settings.max_norm
            )
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss

    def _forward_backward(self, batches: Iterator[Any]) -> float:
        """Gradients of the mean loss over ``grad_accum`` batches; the mean
        batch loss (this process's)."""
        s = self.settings
        self.optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for micro in range(s.grad_accum):
            inputs, targets = next(batches)
            with self._no_sync(micro == s.grad_accum - 1):
                with self._autocast():
                    loss = batch_loss(inputs, targets, self.train_model, self.device)
                self.scaler.scale(loss / s.grad_accum).backward()
            total += loss.item()
            self.tokens_seen += inputs.numel() * self.dist.world_size
        return total / s.grad_accum

    def _agree(self, loss: float, stop: bool) -> tuple[float, bool]:
        """The mean loss over the processes, and whether any of them was asked
        to stop (so that all stop at the same step)."""
        if not self.dist.enabled:
            return loss, stop
        both = torch.tensor([loss, float(stop)], dtype=torch.float64)
        reduced = all_reduce_sum(both, self.device)
        return float(reduced[0]) / self.dist.world_size, bool(reduced[1] > 0)

    def _check_finite(self, loss: float) -> None:
        if math.isfinite(loss):
            return
        kept = latest_checkpoint(self.run_dir / "checkpoints") if self.run_dir else None
        raise SettingError(
            f"the loss became {loss} at step {self.step}; stopping"
            + (f" (last good checkpoint: {kept})" if kept else "")
            + "; try a lower {lr} or {max_norm}"
        )

    def _run(self, stop: _StopFlag) -> dict[str, Any]:
        s = self.settings
        loader = self.data.train_loader
        self.train_model.train()
        last_eval: dict[str, Any] = {}
        while self.epoch < s.epochs and self.step < self.total_steps:
            self.data.train_sampler.start_epoch(
                self.epoch, self.batch_in_epoch * loader.batch_size
            )
            batches = iter(loader)
            if self._rng_after_iter is not None:
                set_rng_state(self._rng_after_iter)
                self._rng_after_iter = None
            while (
                self.batch_in_epoch + s.grad_accum
                <= self.steps_per_epoch * s.grad_accum
            ):
                lr = self._lr()
                loss_value = self.train_step(batches, stop=stop.signal is not None)
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
                if not self.dist.enabled and stop.signal is not None:
                    self.stop_requested = True  # (under DDP: agreed next step)
                if self.stop_requested or self.step >= self.total_steps:
                    break
            if self.stop_requested:
                return last_eval
            epoch_done = self.batch_in_epoch >= self.steps_per_epoch * s.grad_accum
            if epoch_done or self.step >= self.total_steps:
                self._epoch_sample()
            if epoch_done:
                self.epoch += 1
                self.batch_in_epoch = 0
        return last_eval

    def _epoch_sample(self) -> None:
        settings = self.settings
        if not settings.start_context or settings.max_new_tokens == 0:
            return
        if not self.dist.is_main:  # only rank 0 has loggers to show it
            return
        text = self.sample()
        row = {
            "epoch": self.epoch + 1,
            "step": self.step - 1,
            "tokens_seen": self.tokens_seen,
            "prompt": settings.start_context,
            "text": text,
        }
        for logger in self.loggers:
            logger.log_sample(row)
