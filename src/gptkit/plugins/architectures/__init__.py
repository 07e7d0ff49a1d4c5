"""Built-in model families: GPT-2 (the book's), Llama 3 and Qwen3 (the book's
chapter-5 bonus models)."""

from __future__ import annotations

from gptkit import hookimpl


@hookimpl
def register_architectures() -> list[str]:
    return [
        "gptkit.plugins.architectures.gpt2:GPT2",
        "gptkit.plugins.architectures.llama:Llama",
        "gptkit.plugins.architectures.qwen3:Qwen3",
    ]
