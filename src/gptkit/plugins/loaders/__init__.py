"""Built-in weight loaders."""

from __future__ import annotations

from gptkit import hookimpl
from gptkit.core.interfaces import Component


@hookimpl
def register_weight_loaders() -> list[Component]:
    return [
        Component(
            "native",
            "gptkit.plugins.loaders.native:NativeLoader",
            "gptkit run or checkpoint directories (safetensors + config.json).",
        ),
    ]
