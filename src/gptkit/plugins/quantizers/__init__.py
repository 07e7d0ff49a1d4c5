"""Built-in weight quantizers: int8 (per output channel), int4 (group-wise)
and bf16."""

from __future__ import annotations

from gptkit import hookimpl


@hookimpl
def register_quantizers() -> list[str]:
    return [
        "gptkit.plugins.quantizers.weight_only:Int8",
        "gptkit.plugins.quantizers.weight_only:Int4",
        "gptkit.plugins.quantizers.bf16:Bf16",
    ]
