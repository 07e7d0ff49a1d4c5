"""Built-in samplers."""

from __future__ import annotations

from gptkit import hookimpl
from gptkit.core.interfaces import Component

_TOKEN = "gptkit.plugins.samplers.token"


@hookimpl
def register_samplers() -> list[Component]:
    return [
        Component("greedy", f"{_TOKEN}:Greedy", "Always the most likely token."),
        Component(
            "top-k",
            f"{_TOKEN}:TopK",
            "Temperature, then sample among the k most likely (the book's sampler).",
        ),
        Component(
            "top-p",
            f"{_TOKEN}:TopP",
            "Nucleus sampling: the most likely tokens up to probability top_p.",
        ),
        Component(
            "min-p",
            f"{_TOKEN}:MinP",
            "Keep tokens at least min_p times as likely as the most likely one.",
        ),
        Component(
            "beam",
            "gptkit.plugins.samplers.beam:BeamSearch",
            "Beam search with length penalty and early stopping.",
        ),
    ]
