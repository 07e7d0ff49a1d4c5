"""Per-token samplers: greedy and top-k with temperature (the book's chapter 5)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from gptkit.core.interfaces import Sampler


class Greedy(Sampler):
    """Argmax decoding: deterministic, the book's ``generate_text_simple``."""

    name = "greedy"
    summary = "Always the most likely token."
    deterministic = True


class TopK(Sampler):
    """Divide logits by the temperature, keep the ``top_k`` largest, sample.

    Temperature 0 means greedy, as in the book's ``generate``.
    """

    name = "top-k"
    summary = "Temperature, then sample among the k most likely (the book's sampler)."

    @dataclass(frozen=True)
    class Options:
        temperature: float = field(
            default=1.0, metadata={"help": "softmax temperature; 0 = greedy", "ge": 0.0}
        )
        top_k: int | None = field(
            default=50,
            metadata={"help": "keep the k most likely tokens (none = all)", "ge": 1},
        )

    @property
    def deterministic(self) -> bool:  # type: ignore[override]
        return self.options.temperature == 0.0

    def process(self, logits: torch.Tensor) -> torch.Tensor:
        opts = self.options
        if opts.temperature > 0:
            logits = logits / opts.temperature
        if opts.top_k is not None and opts.top_k < logits.shape[-1]:
            kth = torch.topk(logits, opts.top_k, dim=-1).values[..., -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        return logits
