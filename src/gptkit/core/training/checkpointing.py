"""How a :class:`~gptkit.core.training.trainer.Trainer` saves and restores itself: its
loop state, native checkpoints (rank 0 writes whole tensors) and sharded ones
(``strategy="fsdp"``: every process writes its shards,
:mod:`gptkit.core.checkpoints.sharded`), restored at any number of processes.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from gptkit.core.checkpoints.native import save_checkpoint
from gptkit.core.distributed import (
    DistContext,
    all_gather_objects,
    broadcast_object,
)
from gptkit.core.training import parallel
from gptkit.core.training.state import (
    optimizer_state_by_name,
    position_for_world,
    rebatched,
    rng_for_rank,
    rng_state,
    set_rng_state,
)
from gptkit.errors import CheckpointDamaged, GptkitError

if TYPE_CHECKING:
    from gptkit.core.config import GPTConfig
    from gptkit.core.data import DataSplits
    from gptkit.core.settings import TrainSettings


class TrainerCheckpoints:
    """The checkpoint half of the Trainer (a mixin: the Trainer sets these
    attributes and defines ``tell`` and ``_schedule``)."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    settings: TrainSettings
    data: DataSplits
    dist: DistContext
    cfg: GPTConfig
    run_dir: Path | None
    step: int
    epoch: int
    batch_in_epoch: int
    tokens_seen: int
    last_checkpoint: Path | None
    _rng_after_iter: dict[str, Any] | None

    def tell(self, text: str) -> None:  # the Trainer's
        raise NotImplementedError

    def _schedule(self) -> None:  # the Trainer's
        raise NotImplementedError

    @property
    def writes_sharded_checkpoints(self) -> bool:
        """FSDP runs write sharded checkpoints, whatever their process count."""
        return self.settings.strategy == "fsdp"

    def _loop_state(self) -> dict[str, Any]:
        """Grad scaler, loop position and RNG states (every process's under
        several processes: call it on all of them)."""
        rng = rng_state()
        state = {
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "batch_size": self.data.train_loader.batch_size,
            "eval_batch_size": self.data.train_eval_loader.batch_size,
            "tokens_seen": self.tokens_seen,
            "rng": rng,
            "world_size": self.dist.world_size,
            "settings": asdict(self.settings),
        }
        state.update(self.data.train_sampler.state())  # the current pass's order
        if self.dist.enabled:
            state["rng_per_rank"] = all_gather_objects(rng, self.dist)
        return state

    def state_dict(self) -> dict[str, Any]:
        """Optimizer, grad scaler, loop position and RNG states (every
        process's under DDP: call it on all processes). Not for a sharded
        model, whose optimizer state is saved in shards (:meth:`save`)."""
        return {"optimizer": self.optimizer.state_dict(), **self._loop_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (the optimizer only when ``state`` has
        it). A state saved by another number of processes continues with the
        same global batch (:func:`gptkit.core.training.state.position_for_world`)."""
        from gptkit.core.order import BookOrderSampler

        position = position_for_world(
            state,
            world_size=self.dist.world_size,
            batch_size=self.data.train_loader.batch_size,
            book_order=isinstance(self.data.train_sampler, BookOrderSampler),
        )
        if position.grad_accum != self.settings.grad_accum:
            self.settings.grad_accum = position.grad_accum
            self._schedule()
        if position.note:
            self.tell(position.note)
        eval_batch = state.get("eval_batch_size")
        if eval_batch and eval_batch != self.data.train_eval_loader.batch_size:
            self.data.train_eval_loader = rebatched(
                self.data.train_eval_loader, eval_batch
            )
            self.data.val_loader = rebatched(self.data.val_loader, eval_batch)
        if "optimizer" in state:
            self.optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        self.epoch = int(state["epoch"])
        self.batch_in_epoch = position.batch_in_epoch
        self.tokens_seen = int(state["tokens_seen"])
        rng = rng_for_rank(state, self.dist.rank)
        if rng is not None:
            set_rng_state(rng)
        if self.batch_in_epoch > 0:
            # Mid-epoch: continue this pass's order, and restore the RNG again
            # once the loader's new iterator has drawn its seed (the interrupted
            # run drew it when the epoch began, before this checkpoint).
            skip = self.batch_in_epoch * self.data.train_loader.batch_size
            self.data.train_sampler.restore(state, skip)
            self._rng_after_iter = rng

    def restore(self, ckpt_dir: Path) -> None:
        """Continue from checkpoint ``ckpt_dir``, native or sharded, written by
        any number of processes: weights, optimizer and loop state. Every
        process must call it. Errors are one line naming what is wrong."""
        from gptkit.core.checkpoints.layout import is_sharded_checkpoint
        from gptkit.core.checkpoints.native import load_checkpoint, load_trainer_state
        from gptkit.core.checkpoints.sharded import load_training_state
        from gptkit.core.weights import check_state_dict

        try:  # read everything first: a failure here is a damaged checkpoint
            state = load_trainer_state(ckpt_dir)
            sharded = is_sharded_checkpoint(ckpt_dir)
            if not sharded:
                _, weights, _ = load_checkpoint(ckpt_dir)
                check_state_dict(self.cfg, weights)
        except GptkitError as exc:
            raise CheckpointDamaged(str(exc)) from None
        self.partially_restored = True  # until every part below has loaded
        try:
            if sharded:
                try:
                    load_training_state(ckpt_dir, self.model, self.optimizer)
                except GptkitError as exc:
                    raise CheckpointDamaged(str(exc)) from None
                state.pop("optimizer", None)
            else:
                self._load_whole(weights, state.pop("optimizer"))
            self.load_state_dict(state)
        except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as exc:
            raise CheckpointDamaged(
                f"corrupt trainer state in {ckpt_dir}: {type(exc).__name__}: {exc}"
            ) from None
        self.partially_restored = False
        self._saved_step = self.step  # this checkpoint holds the step: no re-save

    def _load_whole(
        self, weights: dict[str, torch.Tensor], optimizer: dict[str, Any]
    ) -> None:
        """Whole weights and a by-index optimizer state (a native checkpoint)
        into the model, sharded or not."""
        if not parallel.is_sharded(self.model):
            self.model.load_state_dict(weights, strict=not self.cfg.tied_keys())
            self.optimizer.load_state_dict(optimizer)
            return
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_state_dict,
        )

        names = [name for name, _ in self.model.named_parameters()]
        full = StateDictOptions(full_state_dict=True, strict=False)
        set_state_dict(
            self.model,
            self.optimizer,
            model_state_dict=weights,
            optim_state_dict=optimizer_state_by_name(optimizer, names),
            options=full,
        )

    def save(self) -> Path | None:
        """Write a checkpoint (rank 0, or every process for a sharded one);
        every process learns whether it worked."""
        if self.run_dir is None:
            return None
        if self.writes_sharded_checkpoints:
            from gptkit.core.checkpoints.sharded import save_sharded_checkpoint

            path = save_sharded_checkpoint(
                self.run_dir / "checkpoints",
                self.step,
                self.model,
                self.optimizer,
                self.cfg,
                trainer_state=self._loop_state(),
                dist=self.dist,
                info={"epoch": self.epoch, "tokens_seen": self.tokens_seen},
                keep_last=self.settings.keep_last,
            )
            self.last_checkpoint = path
            self._saved_step = self.step
            self.tell(f"saved checkpoint {path}")
            return path
        state = self.state_dict()
        outcome: tuple[str | None, str | None] = (None, None)
        if self.dist.is_main:
            try:
                path = save_checkpoint(
                    self.run_dir / "checkpoints",
                    self.step,
                    self.model,
                    self.cfg,
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
        self._saved_step = self.step
        self.tell(f"saved checkpoint {saved}")
        return self.last_checkpoint
