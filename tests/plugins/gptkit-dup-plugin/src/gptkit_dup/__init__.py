"""A gptkit plugin registering a sampler name that is already taken (a test
fixture), next to one that is free: the free one must still be registered."""

from __future__ import annotations

from gptkit import hookimpl


@hookimpl
def register_samplers() -> list[str]:
    return ["gptkit_dup.sampler:Clash", "gptkit_dup.sampler:DupArgmax"]
