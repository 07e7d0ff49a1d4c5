"""Built-in weight quantizers: int8 (per output channel) and int4 (group-wise)."""

from __future__ import annotations

from gptkit import hookimpl
from gptkit.core.interfaces import Component

_MODULE = "gptkit.plugins.quantizers.weight_only"


@hookimpl
def register_quantizers() -> list[Component]:
    return [
        Component(
            "int8",
            f"{_MODULE}:Int8",
            "Weight-only int8, one symmetric scale per output channel.",
        ),
        Component(
            "int4",
            f"{_MODULE}:Int4",
            "Weight-only int4, a scale and a zero point per group of inputs.",
        ),
    ]
