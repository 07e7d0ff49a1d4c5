"""The training loop: the book's ``train_model_simple`` (chapter 5) with the
pieces of appendix D (learning-rate schedule, gradient clipping) and the plumbing
a real run needs (gradient accumulation, precisions, ``torch.compile``, DDP
and FSDP, activation checkpointing, checkpoints, interruption, loggers).

Precisions are described in :mod:`gptkit.core.precision`, DDP, FSDP and
activation checkpointing in :mod:`gptkit.core.training.parallel`. With several processes
(a process group started by torchrun) every process trains on its shard of each
global batch, the gradients are averaged (DDP) or reduce-scattered (FSDP), the
logged loss and the evaluation are averaged over the processes, and only rank 0
logs. Checkpoints are written by rank 0 (DDP: whole tensors) or by every
process (FSDP: its shards, :mod:`gptkit.core.checkpoints.sharded`).

Step numbering follows the book: ``step`` in logged rows is the 0-based index of
the optimizer step just taken, and an evaluation runs when ``step % eval_freq ==
0``. Checkpoint directories are named after the number of steps completed.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.profiler import record_function

from gptkit.core.checkpoints.layout import latest_checkpoint
from gptkit.core.data import DataSplits, eval_batches
from gptkit.core.device import resolve_dtype
from gptkit.core.distributed import (
    DistContext,
    all_reduce_sum,
)
from gptkit.core.generate import generate_tokens
from gptkit.core.interfaces import Logger, RunInfo, Scheduler
from gptkit.core.loss import batch_loss, loader_loss
from gptkit.core.model import GPTModel
from gptkit.core.precision import check_device, cpu_bf16_warning, get_precision
from gptkit.core.settings import TrainSettings
from gptkit.core.tokenizer import Tokenizer, gpt2_tokenizer
from gptkit.core.training import parallel
from gptkit.core.training.checkpointing import TrainerCheckpoints
from gptkit.core.training.state import set_rng_state
from gptkit.errors import Interrupted, SettingError
from gptkit.system.allocator import tune_cpu_allocator


class TrainingInterrupted(Interrupted):
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


def make_adamw(
    params: Any, *, lr: float, weight_decay: float, fused: bool = True
) -> torch.optim.Optimizer:
    """AdamW (Loshchilov & Hutter, 2019), with the fused implementation (one
    kernel for the whole update) where the device has one: CUDA, and the CPU
    since PyTorch 2.4, where it is several times faster than the per-tensor
    loop. Falls back to PyTorch's default implementation elsewhere (and with
    ``fused=False``)."""
    params = list(params)
    if not fused:
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    try:
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


class Trainer(TrainerCheckpoints):
    """Trains ``model`` on ``data``; reports to ``loggers``; writes checkpoints
    under ``run_dir/checkpoints``.

    ``dist`` describes the process group when torchrun started several
    processes: the model is then wrapped in DistributedDataParallel, or sharded
    with FSDP (``settings.strategy``), and only rank 0 should be given loggers.
    ``model`` stays the module whose parameters the optimizer updates (float32;
    ``DTensor`` shards under FSDP, which changes it in place).
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
        tokenizer: Tokenizer | None = None,
    ) -> None:
        settings.validate()
        self.tokenizer = tokenizer or gpt2_tokenizer()
        if device.type == "cpu":
            # Keep the step's large logits blocks in the heap instead of
            # mapping fresh zeroed pages every step (system.allocator).
            tune_cpu_allocator()
        self.model = model
        self.data = data
        self.settings = settings
        self.device = device
        self.scheduler = scheduler
        self.loggers = list(loggers)
        self._untold: list[str] | None = []  # told before the loggers start
        self.run_dir = run_dir
        self.run_config = run_config or {}
        self.dist = dist or DistContext()
        self._schedule()
        self.precision = get_precision(settings.precision)
        check_device(self.precision, device)
        if (note := cpu_bf16_warning(self.precision, device)) and self.dist.is_main:
            self.tell(note)
        self.cfg = model.cfg
        # FSDP shards over a process group; a single process of an FSDP run
        # trains the whole model and still writes sharded checkpoints.
        self.sharded = settings.strategy == "fsdp" and self.dist.enabled
        if settings.activation_checkpointing:
            parallel.checkpoint_activations(model)
        if self.sharded:
            parallel.shard_model(model, device, self.precision.compute)
        self.scaler = self._grad_scaler()
        # FSDP's grad scaler and the fused AdamW disagree on a tensor shape
        # (torch 2.13); fp16 with FSDP takes the multi-tensor AdamW.
        self.optimizer = make_adamw(
            [p for p in model.parameters() if p.requires_grad],  # adapters: theirs
            lr=settings.lr,
            weight_decay=settings.weight_decay,
            fused=not (self.sharded and self.scaler.is_enabled()),
        )
        # The module forward and backward passes go through: bf16-true casts
        # the parameters (FSDP's policy does it for a sharded model).
        self.compute_model: torch.nn.Module = model
        if self.precision.compute is not None and not self.sharded:
            self.compute_model = parallel.CastParameters(
                model, resolve_dtype(self.precision.compute)
            )
        self._ddp: torch.nn.Module | None = None
        self.train_model = self._wrap(self.compute_model)
        # Loop position: steps completed, epoch (0-based), batches of it consumed
        # (by this process).
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.tokens_seen = 0
        self._rng_after_iter: dict[str, Any] | None = None
        self.last_checkpoint: Path | None = None
        self.partially_restored = False  # a failed restore changed the model
        self._saved_step = -1  # the step of last_checkpoint
        self.stop_requested = False
        #: Recorded in every checkpoint's config.json (a finetuned model's
        #: prompt style, so that whatever loads it applies it).
        self.checkpoint_info: dict[str, Any] = {}

    # -- set-up ----------------------------------------------------------------

    def _schedule(self) -> None:
        """Optimizer steps per epoch and in all (after ``grad_accum`` changes)."""
        batches, accum = len(self.data.train_loader), self.settings.grad_accum
        self.steps_per_epoch = batches // accum
        if self.steps_per_epoch < 1:
            raise SettingError(
                f"{{grad_accum}} {accum} is more than the {batches} batches of an epoch"
            )
        self.total_steps = self.settings.epochs * self.steps_per_epoch
        if self.settings.max_steps is not None:
            self.total_steps = min(self.total_steps, self.settings.max_steps)

    def _grad_scaler(self) -> torch.amp.GradScaler:
        """A gradient scaler for fp16 (a disabled one, whose calls do nothing,
        otherwise)."""
        try:
            return parallel.grad_scaler(
                self.device, enabled=self.precision.grad_scaler, sharded=self.sharded
            )
        except (RuntimeError, AttributeError, TypeError) as exc:
            raise SettingError(
                f"{{precision}} {self.precision.name}: no gradient scaler on"
                f" {self.device.type} ({exc})"
            ) from None

    def _wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """The module the training steps call: DDP around the model under
        torchrun (FSDP is already applied to the model itself), then
        ``torch.compile`` around that with the ``compile`` setting. The plain
        model stays ``self.model``: checkpoints store its keys (no ``module.``
        or ``_orig_mod.`` prefixes), evaluation and samples use it."""
        wrapped: torch.nn.Module = model
        if self.dist.enabled and not self.sharded:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            wrapped = self._ddp = DistributedDataParallel(model, device_ids=ids)
        if self.settings.compile:
            wrapped = torch.compile(wrapped)  # type: ignore[assignment]
        return wrapped

    def close(self) -> None:
        """Drop the DistributedDataParallel (and compiled) wrappers, so that
        nothing holds the process group when it is destroyed (see
        :func:`gptkit.core.distributed.shutdown`). The plain model stays."""
        self._ddp = None
        self.train_model = self.model

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.precision.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(
            self.device.type, dtype=resolve_dtype(self.precision.autocast)
        )

    def _no_sync(self, sync: bool) -> contextlib.AbstractContextManager[Any]:
        """DDP's ``no_sync`` for the micro-batches of an accumulation that do
        not end it (their gradients are summed locally, reduced once). FSDP
        reduce-scatters every micro-batch: holding whole gradients until the
        last one would give up the memory sharding saves."""
        if self._ddp is None or sync:
            return contextlib.nullcontext()
        return self._ddp.no_sync()  # type: ignore[operator]

    # -- the loop ------------------------------------------------------------

    def tell(self, text: str) -> None:
        """A line for the user, through the loggers (kept until they start)."""
        if self._untold is not None:
            return self._untold.append(text)
        for logger in self.loggers:
            logger.message(text)

    def evaluate(self) -> tuple[float, float]:
        """Training and validation loss over ``eval_iter`` batches (book's
        ``evaluate_model``) in the training precision; training batches in
        their fixed order. With several processes each computes its share of
        every batch and the sums are reduced, so all processes get the
        single-process numbers."""
        model = self.compute_model
        model.eval()
        n = self.settings.eval_iter
        with self._autocast():
            if self.dist.enabled:
                train = self._sharded_loss(model, self.data.train_eval_loader, n)
                val = self._sharded_loss(model, self.data.val_loader, n)
            else:
                train = loader_loss(self.data.train_eval_loader, model, self.device, n)
                val = loader_loss(self.data.val_loader, model, self.device, n)
        model.train()
        return train, val

    @torch.no_grad()
    def _sharded_loss(
        self,
        model: torch.nn.Module,
        loader: torch.utils.data.DataLoader,
        limit: int | None,
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
                if self.sharded:  # every process must join FSDP's gathers
                    model(inputs[:1].to(self.device))
                continue
            logits = model(x.to(self.device))  # (b, T, V)
            sums[i, 0] = F.cross_entropy(
                logits.flatten(0, 1).float(),
                y.to(self.device).flatten(),
                reduction="sum",
            ).item()
            sums[i, 1] = (y != -100).sum().item()  # padding targets are ignored
        sums = all_reduce_sum(sums, self.device)
        if count == 0:
            return float("nan")
        return float((sums[:, 0] / sums[:, 1]).mean())

    def sample(self) -> str:
        """The continuation of ``start_context`` by the ``sampler`` setting (the
        book's greedy ``generate_text_simple`` by default): the per-epoch sample,
        by the float32 weights. A sharded model is gathered whole on rank 0
        (every process must call this then; the others return "")."""
        from gptkit.core.registry import get_registry

        assert self.settings.start_context is not None
        model: torch.nn.Module = self.model
        if parallel.is_sharded(self.model):
            from gptkit.core.weights import build_model

            state = parallel.full_state_on_rank0(self.model)
            if not self.dist.is_main:
                return ""
            model = build_model(self.cfg, state, device=self.device, consume=True)
        sampler = get_registry().samplers.create(self.settings.sampler)
        result = generate_tokens(
            model,  # type: ignore[arg-type]
            [self.tokenizer.encode(self.settings.start_context)],
            sampler,
            max_new_tokens=self.settings.max_new_tokens,
            eos_id=self.tokenizer.eos_id,
            vocab_limit=self.tokenizer.vocab_limit(self.cfg.vocab_size),
        )[0]
        return self.settings.start_context + self.tokenizer.decode(result.new_ids)

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
        untold, self._untold = self._untold or [], None
        list(map(self.tell, untold))
        started = time.perf_counter()
        last_eval: dict[str, Any] = {}
        status = "completed"
        signum = signal.SIGINT
        try:
            with _StopFlag() as stop:
                last_eval = self._run(stop)
                if self.stop_requested:
                    status = "interrupted"
                    signum = stop.signal or signum
            if self._saved_step != self.step:  # not already saved at this step
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
                f" {self.last_checkpoint}; continue it with resume",
                signum,
            )
        return summary

    def train_step(self, batches: Iterator[Any], *, stop: bool = False) -> float:
        """One optimizer step over the next ``grad_accum`` batches of
        ``batches`` (forward and backward in the precision's dtypes, the
        gradients averaged over the processes, clipping, the grad scaler,
        AdamW). Returns the mean batch loss over all processes; ``stop``: this
        process was asked to stop (sets ``stop_requested`` when any process
        was). The phases are labelled for ``torch.profiler``
        (``gptkit.forward``, ``gptkit.backward``, ``gptkit.optimizer``)."""
        loss, self.stop_requested = self._agree(self._forward_backward(batches), stop)
        self._check_finite(loss)
        with record_function("gptkit.optimizer"):
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
        with record_function("gptkit.optimizer"):
            self.optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for micro in range(s.grad_accum):
            inputs, targets = next(batches)
            with self._no_sync(micro == s.grad_accum - 1):
                with record_function("gptkit.forward"), self._autocast():
                    loss = batch_loss(inputs, targets, self.train_model, self.device)
                with record_function("gptkit.backward"):
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
        sharded = parallel.is_sharded(self.model)  # all processes gather it
        if not self.dist.is_main and not sharded:  # only rank 0 has loggers
            return
        text = self.sample()
        if not self.dist.is_main:
            return
        row = {
            "epoch": self.epoch + 1,
            "step": self.step - 1,
            "tokens_seen": self.tokens_seen,
            "prompt": settings.start_context,
            "text": text,
        }
        for logger in self.loggers:
            logger.log_sample(row)
