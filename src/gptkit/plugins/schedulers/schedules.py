"""Learning-rate schedules, each a pure function of the step.

``warmup-cosine`` follows the book's appendix D (linear warmup from
``initial_lr`` to the peak, then cosine decay to ``min_lr``); ``warmup-stable-decay``
follows Hu et al. (2024, MiniCPM). The peak learning rate is ``--lr`` unless
``peak_lr`` is set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from gptkit.core.interfaces import Scheduler


@dataclass(frozen=True)
class WarmupOptions:
    peak_lr: float | None = field(
        default=None, metadata={"help": "peak learning rate (default: --lr)", "gt": 0.0}
    )
    initial_lr: float = field(
        default=0.0, metadata={"help": "learning rate at step 0", "ge": 0.0}
    )
    min_lr: float = field(
        default=0.0, metadata={"help": "learning rate at the last step", "ge": 0.0}
    )
    warmup_steps: int | None = field(
        default=None, metadata={"help": "warmup steps (overrides warmup)", "ge": 0}
    )
    warmup: float = field(
        default=0.0,
        metadata={"help": "warmup as a fraction of all steps", "ge": 0.0, "le": 1.0},
    )

    def warmup_for(self, total_steps: int) -> int:
        if self.warmup_steps is not None:
            return self.warmup_steps
        return int(self.warmup * total_steps)


def _warmup(opts: WarmupOptions, step: int, warmup: int, peak: float) -> float:
    """Linear ramp from initial_lr (step 0) towards peak (reached at ``warmup``)."""
    return opts.initial_lr + (peak - opts.initial_lr) * step / warmup


class Constant(Scheduler):
    """``--lr`` at every step (the book's chapter 5)."""

    name = "constant"
    summary = "The same learning rate throughout."

    def lr_at(self, step: int, total_steps: int, base_lr: float) -> float:
        return base_lr


class _WarmupThenDecay(Scheduler):
    """Linear warmup to the peak, then ``decay(progress)`` from 1 down to 0 over
    the remaining steps, scaled between the peak and ``min_lr``."""

    Options = WarmupOptions

    @staticmethod
    def decay(progress: float) -> float:
        raise NotImplementedError

    def lr_at(self, step: int, total_steps: int, base_lr: float) -> float:
        opts = self.options
        peak = opts.peak_lr or base_lr
        warmup = opts.warmup_for(total_steps)
        if step < warmup:
            return _warmup(opts, step, warmup, peak)
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return opts.min_lr + (peak - opts.min_lr) * self.decay(progress)


class WarmupCosine(_WarmupThenDecay):
    """Linear warmup, then half a cosine from the peak down to ``min_lr``."""

    name = "warmup-cosine"
    summary = "Linear warmup, then cosine decay to min_lr (the book's appendix D)."

    @staticmethod
    def decay(progress: float) -> float:
        return 0.5 * (1 + math.cos(math.pi * progress))


class Linear(_WarmupThenDecay):
    """Linear warmup, then a straight line from the peak down to ``min_lr``."""

    name = "linear"
    summary = "Linear warmup, then linear decay."

    @staticmethod
    def decay(progress: float) -> float:
        return 1.0 - progress


@dataclass(frozen=True)
class WSDOptions(WarmupOptions):
    decay: float = field(
        default=0.1,
        metadata={
            "help": "final decay as a fraction of all steps",
            "ge": 0.0,
            "le": 1.0,
        },
    )


class WarmupStableDecay(Scheduler):
    """Warmup, hold the peak, then decay linearly to ``min_lr`` over the last
    ``decay`` fraction of the steps."""

    name = "warmup-stable-decay"
    summary = "Warmup, a constant plateau, then a short decay (WSD)."
    Options = WSDOptions

    def lr_at(self, step: int, total_steps: int, base_lr: float) -> float:
        opts = self.options
        peak = opts.peak_lr or base_lr
        warmup = opts.warmup_for(total_steps)
        if step < warmup:
            return _warmup(opts, step, warmup, peak)
        decay_steps = int(opts.decay * total_steps)
        decay_start = total_steps - decay_steps
        if step < decay_start or decay_steps == 0:
            return peak
        progress = (step - decay_start) / decay_steps
        return peak + (opts.min_lr - peak) * min(1.0, progress)
