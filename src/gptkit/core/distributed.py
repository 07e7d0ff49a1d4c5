"""Multi-process training with PyTorch's own machinery: ``torchrun`` starts the
processes, ``torch.distributed`` connects them (gloo on CPU, NCCL on CUDA) and
``DistributedDataParallel`` averages the gradients.

``torchrun`` tells every process who it is through environment variables
(``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``/``MASTER_PORT``);
:func:`init_distributed` reads them. (``gptkit train --devices N``, which
re-executes the command under torchrun, is the command line's: gptkit.cli.launch.)

This module is torch-free at import time; torch is imported inside the functions
that need it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gptkit.errors import GptkitError

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class DistContext:
    """Who this process is in the process group (rank 0 of 1 when alone)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        """Several processes train together (DDP)."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that logs and writes checkpoints."""
        return self.rank == 0


def launched_by_torchrun() -> bool:
    """Whether this process is a worker started by torchrun (or any launcher
    that sets ``RANK`` and ``WORLD_SIZE``)."""
    return "TORCHELASTIC_RUN_ID" in os.environ or (
        "RANK" in os.environ and "WORLD_SIZE" in os.environ
    )


def context_from_env() -> DistContext:
    """The rank, local rank and world size torchrun put in the environment."""
    try:
        return DistContext(
            rank=int(os.environ.get("RANK", "0")),
            local_rank=int(os.environ.get("LOCAL_RANK", "0")),
            world_size=int(os.environ.get("WORLD_SIZE", "1")),
        )
    except ValueError:
        raise GptkitError(
            "RANK, LOCAL_RANK and WORLD_SIZE must be integers (set by torchrun)"
        ) from None


def init_distributed(device_name: str) -> tuple[DistContext, torch.device]:
    """Join the process group when started by torchrun with several processes.

    Returns the context and this process's device: ``cuda:LOCAL_RANK`` with
    NCCL on CUDA, the CPU with gloo. A single process (no torchrun, or
    ``--nproc-per-node 1``) gets ``resolve_device(device_name)`` and no group.
    """
    import torch

    from gptkit.core.device import resolve_device

    ctx = context_from_env()
    device = resolve_device(device_name)
    if not ctx.enabled:
        return ctx, device
    import torch.distributed as dist

    if device.type == "cuda":
        if ctx.local_rank >= torch.cuda.device_count():
            raise GptkitError(
                f"local rank {ctx.local_rank} has no GPU: this machine has"
                f" {torch.cuda.device_count()}; start fewer processes per node"
            )
        device = torch.device("cuda", ctx.local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    elif device.type == "cpu":
        backend = "gloo"
    else:
        raise GptkitError(
            f"distributed training runs on CUDA (NCCL) or the CPU (gloo), not"
            f" {device.type}"
        )
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return ctx, device


def shutdown(*, clean: bool = True) -> None:
    """Leave the process group (a no-op when there is none).

    Objects that hold the group (DistributedDataParallel's reducer and its
    pending work) must be gone first: freed later, during the interpreter's
    own teardown, gloo's worker threads release tensors that need the Python
    interpreter, which then aborts the process (SIGABRT). So the garbage is
    collected here, before the group is destroyed; callers drop their
    references first (``Trainer.close``). After a ``clean`` run the processes
    meet at a barrier, so none tears its connections down while another still
    uses them.
    """
    import gc

    import torch.distributed as dist

    gc.collect()
    if not (dist.is_available() and dist.is_initialized()):
        return
    if clean:
        dist.barrier()
    dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Sum ``tensor`` over all processes (moved to ``device`` for NCCL); the
    result is on the CPU."""
    import torch.distributed as dist

    on_device = tensor.to(device)
    dist.all_reduce(on_device, op=dist.ReduceOp.SUM)
    return on_device.cpu()


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()


def broadcast_object(obj: Any, ctx: DistContext) -> Any:
    """Rank 0's ``obj`` on every process."""
    if not ctx.enabled:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather_objects(obj: Any, ctx: DistContext) -> list[Any]:
    """Every process's ``obj``, indexed by rank."""
    if not ctx.enabled:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out
