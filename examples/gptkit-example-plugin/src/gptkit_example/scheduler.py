"""The inverse-square-root schedule with linear warmup.

A. Vaswani et al., "Attention Is All You Need", NeurIPS 2017, eq. (3):
``lrate = d_model**-0.5 * min(n**-0.5, n * warmup**-1.5)`` for step number
``n`` (1-based). Here it is scaled so that the peak, reached at ``n ==
warmup_steps``, is gptkit's ``--lr``::

    lr(n) = base_lr * min(n / warmup_steps, sqrt(warmup_steps / n))

With ``warmup_steps = 0`` it is ``base_lr / sqrt(n)``. The rate never reaches
zero, so a run can be continued for more steps with the same schedule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from gptkit.core.interfaces import Scheduler


class InverseSqrt(Scheduler):
    """Linear warmup to ``--lr``, then ``--lr * sqrt(warmup_steps / n)``."""

    name = "inverse-sqrt"
    summary = "Linear warmup, then decay with the inverse square root of the step."

    @dataclass(frozen=True)
    class Options:
        warmup_steps: int = field(
            default=100,
            metadata={"help": "steps of linear warmup to the peak (--lr)", "ge": 0},
        )
        min_lr: float = field(
            default=0.0,
            metadata={"help": "never go below this learning rate", "ge": 0.0},
        )

    def lr_at(self, step: int, total_steps: int, base_lr: float) -> float:
        """The rate of 0-based optimizer step ``step`` (``total_steps`` unused)."""
        n = step + 1  # the paper counts steps from 1
        warmup = self.options.warmup_steps
        if warmup == 0:
            factor = 1.0 / math.sqrt(n)
        else:
            factor = min(n / warmup, math.sqrt(warmup / n))
        return max(self.options.min_lr, base_lr * factor)
