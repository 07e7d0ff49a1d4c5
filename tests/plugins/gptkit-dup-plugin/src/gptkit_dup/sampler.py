"""The clashing sampler: plain argmax."""

from __future__ import annotations

from gptkit.core.interfaces import Sampler


class Clash(Sampler):
    """Argmax decoding under a name another plugin already uses."""

    name = "locally-typical"
    summary = "Clashes with the example."
    deterministic = True


class DupArgmax(Clash):
    """The same sampler under a free name."""

    name = "dup-argmax"
    summary = "A free name."
