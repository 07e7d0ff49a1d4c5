"""Built-in learning-rate schedulers."""

from __future__ import annotations

from gptkit import hookimpl
from gptkit.core.interfaces import Component

_MODULE = "gptkit.plugins.schedulers.schedules"


@hookimpl
def register_schedulers() -> list[Component]:
    return [
        Component(
            "constant", f"{_MODULE}:Constant", "The same learning rate throughout."
        ),
        Component(
            "warmup-cosine",
            f"{_MODULE}:WarmupCosine",
            "Linear warmup, then cosine decay to min_lr (the book's appendix D).",
        ),
        Component("linear", f"{_MODULE}:Linear", "Linear warmup, then linear decay."),
        Component(
            "warmup-stable-decay",
            f"{_MODULE}:WarmupStableDecay",
            "Warmup, a constant plateau, then a short decay (WSD).",
        ),
    ]
