"""Locally typical sampling.

C. Meister, T. Pimentel, G. Wiher, R. Cotterell, "Locally Typical Sampling",
TACL 11 (2023), arXiv:2202.00666. A token is *typical* when its information
content ``-log p`` is close to the expected information content of the next
token, the entropy ``H`` of the distribution. The sampler sorts the tokens by
``| -log p - H |``, keeps the smallest prefix of that order whose probability
mass reaches ``mass`` (the paper's tau) and samples among them after
renormalising. The paper reports ``mass`` 0.2 for story generation and 0.95 for
summarisation as good settings.

Only :meth:`process` is implemented: gptkit's engine owns the decode loop and
draws from ``softmax(process(logits))`` in :meth:`Sampler.sample`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from gptkit.core.interfaces import Sampler


class LocallyTypical(Sampler):
    """Sample among the tokens whose surprisal is closest to the entropy."""

    name = "locally-typical"
    summary = "Locally typical sampling (Meister et al., 2022)."

    @dataclass(frozen=True)
    class Options:
        mass: float = field(
            default=0.95,
            metadata={
                "help": "probability mass of the typical set (the paper's tau)",
                "gt": 0.0,
                "le": 1.0,
            },
        )
        temperature: float = field(
            default=1.0,
            metadata={"help": "softmax temperature, applied first", "gt": 0.0},
        )
        min_tokens: int = field(
            default=1, metadata={"help": "always keep at least this many", "ge": 1}
        )

    def process(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits (B, V) with every token outside the typical set at ``-inf``."""
        opts = self.options
        scaled = logits / opts.temperature  # (B, V)
        if opts.mass >= 1.0:  # the typical set is the whole vocabulary
            return scaled
        logp = torch.log_softmax(scaled, dim=-1)  # (B, V); -inf for removed ids
        p = logp.exp()
        # H = -sum p log p, with 0 * log 0 = 0 for tokens already removed.
        entropy = -torch.where(p > 0, p * logp, torch.zeros_like(p)).sum(
            dim=-1, keepdim=True
        )  # (B, 1)
        distance = (-logp - entropy).abs()  # (B, V); inf for removed ids
        order = distance.argsort(dim=-1)  # (B, V), most typical first
        sorted_p = p.gather(-1, order)  # (B, V)
        mass_before = sorted_p.cumsum(dim=-1) - sorted_p  # (B, V)
        # Keep a token while the mass before it is short of `mass`: the kept
        # prefix is the smallest one whose mass reaches `mass`.
        keep_sorted = mass_before < opts.mass
        keep_sorted[:, : opts.min_tokens] = True
        keep_sorted &= sorted_p > 0  # never revive a removed token
        keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
        return scaled.masked_fill(~keep, float("-inf"))
