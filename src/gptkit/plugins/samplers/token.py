"""Per-token samplers: greedy, top-k (the book's chapter 5), top-p and min-p.

Every sampler with a ``temperature`` treats 0 as greedy, as the book does.
Repetition penalty and n-gram blocking are engine options (``gptkit generate
--repetition-penalty``, ``--no-repeat-ngram-size``) applied before any sampler.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from gptkit.core.interfaces import Sampler
from gptkit.plugins.samplers.warpers import warp

_TEMPERATURE = {"help": "softmax temperature; 0 = greedy", "ge": 0.0}
_TOP_K = {"help": "keep the k most likely tokens (none = all)", "ge": 1}
_TOP_P = {
    "help": "keep the most likely tokens up to this probability",
    "gt": 0.0,
    "le": 1.0,
}


class Greedy(Sampler):
    """Argmax decoding: deterministic, the book's ``generate_text_simple``."""

    name = "greedy"
    summary = "Always the most likely token."
    deterministic = True


class _Warped(Sampler):
    """A sampler defined by the warpers it applies before a softmax draw."""

    @property
    def deterministic(self) -> bool:  # type: ignore[override]
        return self.options.temperature == 0.0

    def process(self, logits: torch.Tensor) -> torch.Tensor:
        o = self.options
        if o.temperature == 0.0:
            return logits
        return warp(
            logits,
            temp=o.temperature,
            k=getattr(o, "top_k", None),
            p=getattr(o, "top_p", None),
            minp=getattr(o, "min_p", None),
        )


class TopK(_Warped):
    """Divide logits by the temperature, keep the ``top_k`` largest, sample."""

    name = "top-k"
    summary = "Temperature, then sample among the k most likely (the book's sampler)."

    @dataclass(frozen=True)
    class Options:
        temperature: float = field(default=1.0, metadata=_TEMPERATURE)
        top_k: int | None = field(default=50, metadata=_TOP_K)


class TopP(_Warped):
    """Nucleus sampling (Holtzman et al., 2020), optionally after top-k."""

    name = "top-p"
    summary = "Nucleus sampling: the most likely tokens up to probability top_p."

    @dataclass(frozen=True)
    class Options:
        top_p: float = field(default=0.9, metadata=_TOP_P)
        temperature: float = field(default=1.0, metadata=_TEMPERATURE)
        top_k: int | None = field(default=None, metadata=_TOP_K)


class MinP(_Warped):
    """Min-p sampling (Nguyen et al., 2024): a threshold relative to the top token."""

    name = "min-p"
    summary = "Keep tokens at least min_p times as likely as the most likely one."

    @dataclass(frozen=True)
    class Options:
        min_p: float = field(
            default=0.1,
            metadata={"help": "relative probability threshold", "gt": 0.0, "le": 1.0},
        )
        temperature: float = field(default=1.0, metadata=_TEMPERATURE)
        top_k: int | None = field(default=None, metadata=_TOP_K)
        top_p: float | None = field(default=None, metadata=_TOP_P)
