"""A gptkit plugin registering a sampler name that is already taken (a test
fixture), next to one that is free: the free one must still be registered."""

from __future__ import annotations

from gptkit import hookimpl
from gptkit.core.interfaces import Component


@hookimpl
def register_samplers() -> list[Component]:
    return [
        Component(
            "locally-typical", "gptkit_dup.sampler:Clash", "Clashes with the example."
        ),
        Component("dup-argmax", "gptkit_dup.sampler:DupArgmax", "A free name."),
    ]
