"""Logits warpers: temperature, top-k, nucleus (top-p) and min-p filtering.

They follow the definitions of Fan et al. (2018, top-k), Holtzman et al. (2020,
nucleus sampling) and Nguyen et al. (2024, min-p), with the conventions of
Hugging Face transformers' logits warpers so the two give the same
distributions: top-p removes the tokens whose cumulative probability, counted
from the least likely, stays within ``1 - top_p``; min-p removes tokens less
likely than ``min_p`` times the most likely one; each keeps at least one token.
Removed tokens get ``-inf``. All functions take and return logits (B, V).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from gptkit.system.sampling import nucleus_threshold

NEG_INF = float("-inf")


def temperature(logits: Tensor, value: float) -> Tensor:
    """Divide by ``value`` (> 0); 1.0 leaves the logits unchanged.

    A tiny temperature (1e-300) overflows the division to infinities, whose
    softmax is NaN; the rows where that happens are divided after subtracting
    their maximum instead (the same distribution, in finite numbers: the limit
    of a vanishing temperature, greedy among the top tokens).
    """
    if value == 1.0:
        return logits
    scaled = logits / value
    # No overflow when every scaled logit is finite (a NaN fails the test too).
    if value >= 1.0 or float(scaled.abs().amax()) < float("inf"):
        return scaled
    overflow = (~torch.isfinite(scaled) & torch.isfinite(logits)).any(-1, keepdim=True)
    below = logits - logits.amax(dim=-1, keepdim=True)  # <= 0; 0 at the top
    # (the value may round to 0 in float32: 0/0 would be NaN, so the top stays 0)
    stable = torch.where(below == 0, below, below / value)
    return torch.where(overflow, stable, scaled)


def top_k(logits: Tensor, k: int | None) -> Tensor:
    """Keep the ``k`` largest logits of each row (ties at the k-th all stay)."""
    if k is None or k <= 0 or k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]  # (B, 1)
    return logits.masked_fill(logits < kth, NEG_INF)


#: Top-p on the CPU first looks for the nucleus among this many most likely
#: tokens (a trained model's usually fits) before sorting the whole vocabulary.
NUCLEUS_PREFIX = 1024


def top_p(logits: Tensor, p: float | None) -> Tensor:
    """Keep the smallest set of most likely tokens whose probability reaches ``p``.

    In descending order of probability, a token stays when the mass of the
    tokens before it is below ``p``; that defines a probability threshold, and
    every token at or above it stays. On the CPU the threshold comes from
    :func:`gptkit.system.sampling.nucleus_threshold` (C; it sorts only the
    probabilities near the crossing, ~0.1 ms for 50,257 tokens, the same
    value as a full sort); where that does not apply, only the probability
    values are sorted: when the :data:`NUCLEUS_PREFIX` most likely tokens
    already hold more than ``p`` (with a margin far above float32 rounding),
    only they are (``torch.topk``; their running sums are the full sort's
    first ones), else all of them, with numpy (torch's CPU sort of 50,257
    floats takes several times numpy's ~1 ms).
    """
    if p is None or p >= 1.0:
        return logits
    probs = logits.float().softmax(dim=-1)  # (B, V)
    masked = _nucleus_in_c(logits, probs, p)
    if masked is not None:
        return masked
    descending = _descending(probs, p)
    before = descending.cumsum(dim=-1) - descending  # mass of the more likely tokens
    # The top token always stays, also when p underflows in float32 (5e-324).
    kept = (before < p).sum(dim=-1, keepdim=True).clamp_(min=1)
    threshold = descending.gather(-1, kept - 1)
    return logits.masked_fill(probs < threshold, NEG_INF)


def _nucleus_in_c(logits: Tensor, probs: Tensor, p: float) -> Tensor | None:
    """:func:`top_p` by :func:`nucleus_threshold` (C, no sort; the same
    thresholds) for float32 CPU rows, or None where it does not apply."""
    if logits.device.type != "cpu" or logits.dtype != torch.float32:
        return None
    if logits.dim() != 2 or not logits.is_contiguous():
        return None
    out = torch.empty_like(logits)
    for row, logit, dest in zip(probs, logits, out, strict=True):
        if nucleus_threshold(row, p, logit, dest) is None:
            return None
    return out


def _descending(probs: Tensor, p: float) -> Tensor:
    """``probs`` (B, V) sorted descending along V, or a prefix of that holding
    every token whose preceding mass can be below ``p``."""
    if probs.device.type != "cpu":
        return torch.sort(probs, dim=-1, descending=True).values
    prefix = NUCLEUS_PREFIX
    # k tokens each at most the top one's probability: a cheap bound first.
    if prefix < probs.shape[-1] and bool((probs.amax(-1) * prefix > p).all()):
        top = torch.topk(probs, prefix, dim=-1).values  # sorted descending
        if bool((top.sum(-1) >= p + 1e-3).all()):
            return top
    return torch.from_numpy(np.sort(probs.numpy(), axis=-1)).flip(-1)


def min_p(logits: Tensor, p: float | None) -> Tensor:
    """Drop tokens whose probability is below ``p`` x the top token's."""
    if p is None or p <= 0.0:
        return logits
    probs = logits.softmax(dim=-1)
    threshold = p * probs.amax(dim=-1, keepdim=True)
    return logits.masked_fill(probs < threshold, NEG_INF)


def warp(
    logits: Tensor,
    *,
    temp: float = 1.0,
    k: int | None = None,
    p: float | None = None,
    minp: float | None = None,
) -> Tensor:
    """Temperature, then top-k, then top-p, then min-p (transformers' order)."""
    return min_p(top_p(top_k(temperature(logits, temp), k), p), minp)
