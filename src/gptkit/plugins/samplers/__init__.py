"""Built-in samplers."""

from __future__ import annotations

from gptkit import hookimpl


@hookimpl
def register_samplers() -> list[str]:
    return [
        "gptkit.plugins.samplers.token:Greedy",
        "gptkit.plugins.samplers.token:TopK",
        "gptkit.plugins.samplers.token:TopP",
        "gptkit.plugins.samplers.token:MinP",
        "gptkit.plugins.samplers.beam:BeamSearch",
        "gptkit.plugins.samplers.speculative:Speculative",
    ]
