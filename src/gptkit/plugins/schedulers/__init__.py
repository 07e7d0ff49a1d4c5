"""Built-in learning-rate schedulers."""

from __future__ import annotations

from gptkit import hookimpl


@hookimpl
def register_schedulers() -> list[str]:
    return [
        "gptkit.plugins.schedulers.schedules:Constant",
        "gptkit.plugins.schedulers.schedules:WarmupCosine",
        "gptkit.plugins.schedulers.schedules:Linear",
        "gptkit.plugins.schedulers.schedules:WarmupStableDecay",
    ]
