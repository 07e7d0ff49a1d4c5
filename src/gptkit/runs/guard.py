"""The run directory as a guarded resource, and the failures of a run said in
one line (torch-free): the lock a run holds on its directory, the memory
preflight before its model exists, and where a resume would continue after a
stop. :mod:`gptkit.runs.compose` composes a run with these.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from gptkit.errors import GptkitError

if TYPE_CHECKING:
    import torch

    from gptkit.core.config import GPTConfig
    from gptkit.core.distributed import DistContext
    from gptkit.core.settings import TrainSettings
    from gptkit.core.training.trainer import Trainer


@contextmanager
def hold_run_dir(
    run_dir: Path, dist: DistContext, *, resume: bool
) -> Iterator[str | None]:
    """Hold the run directory's lock (:mod:`gptkit.system.lock`) for the
    block: rank 0 takes it, and every process of the group learns whether it
    did, so that a second writer stops everywhere with the holder's name.
    Yields a note for the user when the lock of a dead process was taken over
    (rank 0; None elsewhere)."""
    from gptkit.core.distributed import broadcast_object
    from gptkit.system.lock import RunLock

    lock = RunLock(run_dir, "resume" if resume else "train")
    outcome: tuple[str | None, str | None] = (None, None)
    if dist.is_main:
        try:
            if resume and not run_dir.is_dir():
                raise GptkitError(f"{run_dir} is not a gptkit run directory")
            lock.acquire()
            outcome = (None, lock.took_over_note())
        except GptkitError as exc:
            outcome = (str(exc), None)
    error, note = broadcast_object(outcome, dist)
    if error is not None:
        raise GptkitError(error)
    try:
        yield note if dist.is_main else None
    finally:
        lock.release()


def warn(text: str) -> None:
    """A note for the user on stderr (not an error)."""
    print(f"gptkit: {text}", file=sys.stderr, flush=True)


def where_resume_starts(trainer: Trainer, run_dir: Path) -> str:
    """Where resuming the run would continue, for a message."""
    from gptkit.core.checkpoints.layout import latest_checkpoint

    ckpt = latest_checkpoint(run_dir / "checkpoints")
    start = f"from {ckpt.name}" if ckpt else "from step 0 (no checkpoint yet)"
    return f"resume {run_dir} continues {start}"


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (at most 200 characters)."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


def out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` reports an allocation that failed (torch's and
    Python's ways of saying it)."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(m in text for m in _OOM_MARKERS)


_OOM_MARKERS = (
    "out of memory",
    "can't allocate memory",
    "cannot allocate memory",
    "not enough memory",
    "storage size calculation overflowed",
)


def check_training_memory(
    settings: TrainSettings,
    cfg: GPTConfig,
    device: torch.device,
    dist: DistContext,
    *,
    weights_loaded: bool = False,
) -> None:
    """Refuse, before the model exists, a run that cannot fit in memory (the
    processes of this node share the CPU's memory; GPUs are one per process)."""
    from gptkit.core.distributed import broadcast_object
    from gptkit.runs.preflight import (
        MemoryPreflightError,
        check_memory,
        training_estimate,
    )

    refusal: tuple[str, tuple[str, ...]] | None = None
    if dist.is_main:  # one decision for every process
        estimate = training_estimate(
            cfg,
            batch_size=settings.batch_size,
            precision=settings.precision,
            device_type=device.type,
            weights_loaded=weights_loaded,
        )
        if device.type == "cpu" and dist.enabled:
            local = int(os.environ.get("LOCAL_WORLD_SIZE", dist.world_size))
            estimate = estimate.times(local, "processes on this node")
        try:
            check_memory(estimate, device, max_memory=settings.max_memory)
        except MemoryPreflightError as exc:
            refusal = (exc.template, exc.settings)
    refusal = broadcast_object(refusal, dist)
    if refusal is not None:
        raise MemoryPreflightError(*refusal)
