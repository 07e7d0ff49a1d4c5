"""Built-in adapters: LoRA (Hu et al., 2021; the book's appendix E)."""

from __future__ import annotations

from gptkit import hookimpl


@hookimpl
def register_adapters() -> list[str]:
    return ["gptkit.plugins.adapters.lora:LoRA"]
