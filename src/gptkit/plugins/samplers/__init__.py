"""Built-in samplers."""

from __future__ import annotations

from gptkit import hookimpl
from gptkit.core.interfaces import Component

_MODULE = "gptkit.plugins.samplers.token"


@hookimpl
def register_samplers() -> list[Component]:
    return [
        Component("greedy", f"{_MODULE}:Greedy", "Always the most likely token."),
        Component(
            "top-k",
            f"{_MODULE}:TopK",
            "Temperature, then sample among the k most likely (the book's sampler).",
        ),
    ]
