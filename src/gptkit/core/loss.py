"""Cross-entropy of next-token prediction and perplexity (the book's section 5.1)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def batch_loss(
    input_batch: Tensor, target_batch: Tensor, model: nn.Module, device: torch.device
) -> Tensor:
    """Mean cross-entropy over all positions of one batch (``calc_loss_batch``)."""
    input_batch = input_batch.to(device, non_blocking=True)
    target_batch = target_batch.to(device, non_blocking=True)
    logits = model(input_batch)  # (B, T, V)
    return F.cross_entropy(logits.flatten(0, 1).float(), target_batch.flatten())


@torch.no_grad()
def loader_loss(
    loader: Iterable[tuple[Tensor, Tensor]],
    model: nn.Module,
    device: torch.device,
    num_batches: int | None = None,
    on_batch: Callable[[], None] | None = None,
) -> float:
    """Mean of the batch losses over the first ``num_batches`` batches (all when
    ``None``), as the book's ``calc_loss_loader``; NaN for an empty loader.
    ``on_batch`` is called after each batch (progress)."""
    total, count = 0.0, 0
    for i, (inputs, targets) in enumerate(loader):
        if num_batches is not None and i >= num_batches:
            break
        total += batch_loss(inputs, targets, model, device).item()
        count += 1
        if on_batch is not None:
            on_batch()
    return total / count if count else float("nan")


def perplexity(loss: float) -> float:
    """exp(loss), ``inf`` when it overflows."""
    try:
        return math.exp(loss)
    except OverflowError:
        return float("inf")
