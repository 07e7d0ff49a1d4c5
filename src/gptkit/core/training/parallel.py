"""How the trainer runs the model: bf16-true's parameter cast, activation
checkpointing, and the two ways to train with several processes.

- **DDP** (``strategy="ddp"``): every process holds the whole model, gradients
  and AdamW state; ``DistributedDataParallel`` averages the gradients.
- **FSDP** (``strategy="fsdp"``): PyTorch's ``fully_shard`` (FSDP2; Zhao et al.,
  2023, "PyTorch FSDP") splits every parameter, its gradient and its AdamW
  state across the processes (each holds 1/W of them, as ``DTensor`` shards).
  Each transformer block is one unit: its parameters are gathered just before
  its forward (and again for its backward) and freed after, and its gradients
  are reduce-scattered, so a process holds whole weights for one block at a
  time. The embeddings, the final norm and the output head form the root unit.
  The mixed-precision policy follows the precision: ``bf16-true`` gathers the
  parameters in bf16 and reduces the gradients in float32.
- **Activation checkpointing** (Chen et al., 2016, "Training deep nets with
  sublinear memory cost"): each block keeps only its input for the backward
  pass and recomputes its activations there (about one more forward pass of
  compute, the random state of dropout replayed), through PyTorch's composable
  ``checkpoint``, which keeps the parameter names.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn


class CastParameters(nn.Module):
    """Runs ``module`` with its floating-point parameters cast to ``dtype``.

    The cast is part of the autograd graph: the backward pass computes in
    ``dtype`` and the cast's backward turns each gradient back into float32,
    accumulated in the float32 parameter's ``.grad`` (so gradient accumulation
    over micro-batches also sums in float32). The parameters themselves, which
    the optimizer updates, stay float32 (``module``'s own).
    """

    def __init__(self, module: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.module = module
        self.dtype = dtype

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        cast = {
            name: p.to(self.dtype) if p.is_floating_point() else p
            for name, p in self.module.named_parameters()
        }
        # tie_weights: a tied output head follows its (cast) token embedding.
        return torch.func.functional_call(
            self.module, cast, args, kwargs, tie_weights=True
        )


def checkpoint_activations(model: nn.Module) -> None:
    """Recompute each transformer block's activations in the backward pass
    instead of storing them (the block's input is kept).

    The recomputation runs with the parameter tensors the forward pass used:
    under bf16-true those are bf16 casts that exist only during the forward
    call (:class:`CastParameters`), so they are put back for it."""
    from torch.distributed._composable import checkpoint

    for block in model.trf_blocks:  # type: ignore[union-attr]
        checkpoint(block, context_fn=_recompute_with_forward_parameters(block))


def _recompute_with_forward_parameters(block: nn.Module) -> Any:
    def context_fn() -> tuple[Any, Any]:
        used = [
            (module, name, tensor)
            for module in block.modules()
            for name, tensor in module._parameters.items()
            if tensor is not None
        ]
        return contextlib.nullcontext(), _parameters_swapped(used)

    return context_fn


@contextlib.contextmanager
def _parameters_swapped(
    entries: list[tuple[nn.Module, str, torch.Tensor]],
) -> Iterator[None]:
    """Each ``module.<name>`` set to ``tensor`` for the block, then restored
    (what ``torch.func.functional_call`` does, as a context manager)."""
    saved = [(module, name, module._parameters[name]) for module, name, _ in entries]
    try:
        for module, name, tensor in entries:
            module._parameters[name] = tensor  # type: ignore[assignment]
        yield
    finally:
        for module, name, tensor in saved:
            module._parameters[name] = tensor


def shard_model(model: nn.Module, device: torch.device, compute: str | None) -> None:
    """Apply ``fully_shard`` to every transformer block, then to the model (the
    root unit: embeddings, final norm, head). ``compute``: the dtype name the
    parameters are gathered in (``bf16-true``), gradients reduced in float32;
    None keeps float32 (autocast, if any, then runs inside the forward).

    The model is changed in place: its parameters become ``DTensor`` shards of
    the process group's mesh, so create the optimizer afterwards."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    from gptkit.core.device import resolve_dtype

    if device.type == "cpu":  # freed gathers go back to the kernel
        from gptkit.system.allocator import release_cpu_memory

        release_cpu_memory()
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    if compute is None:
        policy = MixedPrecisionPolicy()
    else:
        policy = MixedPrecisionPolicy(
            param_dtype=resolve_dtype(compute), reduce_dtype=torch.float32
        )
    for block in model.trf_blocks:  # type: ignore[union-attr]
        fully_shard(block, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)


def is_sharded(model: nn.Module) -> bool:
    """Whether ``fully_shard`` was applied to ``model``."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def full_state_on_rank0(model: nn.Module) -> dict[str, torch.Tensor]:
    """The whole (unsharded) state dict of a sharded model, as CPU tensors on
    rank 0 (an empty dict elsewhere). Every process must call it."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
    )

    return get_model_state_dict(
        model, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
    )


def grad_scaler(
    device: torch.device, *, enabled: bool, sharded: bool
) -> torch.amp.GradScaler:
    """A gradient scaler (disabled: its calls do nothing). Sharded gradients
    need FSDP's, which agrees across the processes on whether a step
    overflowed (each holds only a shard of the gradients)."""
    if sharded and enabled:
        from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler

        return ShardedGradScaler(device.type, enabled=True)
    return torch.amp.GradScaler(device.type, enabled=enabled)
