"""What a checkpoint's trainer state holds besides the weights: the random
states, and how a run's position maps onto another number of processes.

A run resumed with a different number of processes keeps its global batch
(per-process batch x processes x gradient accumulation), and so its losses: the
per-process batch stays, the accumulation absorbs the change (2 processes x 1
micro-batch become 1 process x 2). Under the seeded data order, process ``r`` of
``W`` takes positions ``r, r + W, ...`` of each epoch's order, so the micro-batches
of one step cover the same windows at any ``W``; the position in the epoch moves
from one process count to the other as a number of windows consumed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from gptkit.errors import GptkitError


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
    """Restore what :func:`rng_state` returned."""
    version, py_state, gauss = state["python"]
    random.setstate((version, tuple(py_state), gauss))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def rng_for_rank(state: dict[str, Any], rank: int) -> dict[str, Any] | None:
    """The saved random state of process ``rank`` (None: that process did not
    exist when the checkpoint was written; it keeps its fresh seed)."""
    per_rank = state.get("rng_per_rank")
    if per_rank:
        return per_rank[rank] if rank < len(per_rank) else None
    return state["rng"] if rank == 0 else None


@dataclass(frozen=True)
class Position:
    """Where a resumed process continues: micro-batches per optimizer step and
    micro-batches of the current epoch already consumed (by this process)."""

    grad_accum: int
    batch_in_epoch: int
    note: str | None = None  # what changed, for the user


def position_for_world(
    state: dict[str, Any], *, world_size: int, batch_size: int, book_order: bool
) -> Position:
    """The saved loop position, mapped onto ``world_size`` processes with
    per-process batches of ``batch_size`` (see the module's docs)."""
    saved_world = int(state.get("world_size", 1))
    saved_accum = int(state["settings"]["grad_accum"])
    batch_in_epoch = int(state["batch_in_epoch"])
    if saved_world == world_size:
        return Position(saved_accum, batch_in_epoch)
    saved_batch = int(state.get("batch_size", batch_size))
    if book_order or "epoch_order_seed" in state:
        raise GptkitError(
            f"the run was trained by {saved_world} process(es) and this is"
            f" {world_size}: a different number of processes needs the seeded"
            " data order on both sides (the book's order is for one process)"
        )
    micro = saved_accum * saved_world  # micro-batches per step, all processes
    if saved_batch != batch_size or micro % world_size:
        raise GptkitError(
            f"the run's global batch is {saved_batch} sequences x {saved_world}"
            f" process(es) x {saved_accum} accumulation step(s); {world_size}"
            f" processes of {batch_size} cannot make it (use a number of"
            f" processes that divides {micro})"
        )
    accum = micro // world_size
    note = (
        f"resuming a run of {saved_world} process(es) with {world_size}:"
        f" gradient accumulation {accum} keeps the global batch of"
        f" {saved_batch * micro} sequences"
    )
    return Position(accum, batch_in_epoch * saved_world // world_size, note)


def rebatched(
    loader: torch.utils.data.DataLoader, batch_size: int
) -> torch.utils.data.DataLoader:
    """An in-order evaluation loader over the same windows with another batch
    size (its own generator kept, so iterating draws nothing from the global
    random state)."""
    return torch.utils.data.DataLoader(
        loader.dataset,
        batch_size=batch_size,
        shuffle=False,
        drop_last=loader.drop_last,
        generator=loader.generator,
    )


def optimizer_state_by_name(state: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """A ``torch.optim`` state dict keyed by parameter index (the order of
    ``model.parameters()``) re-keyed by parameter name, the form
    ``torch.distributed.checkpoint.state_dict`` loads into a sharded model."""
    return {
        "state": {names[int(i)]: s for i, s in state["state"].items()},
        "param_groups": [
            {**group, "params": [names[int(i)] for i in group["params"]]}
            for group in state["param_groups"]
        ],
    }
