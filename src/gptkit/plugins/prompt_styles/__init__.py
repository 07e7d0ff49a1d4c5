"""Built-in prompt styles: the book's Alpaca template, its Phi-3 exercise, and a
checkpoint's own Jinja chat template."""

from __future__ import annotations

from gptkit import hookimpl


@hookimpl
def register_prompt_styles() -> list[str]:
    return [
        "gptkit.plugins.prompt_styles.styles:Alpaca",
        "gptkit.plugins.prompt_styles.styles:Phi3",
        "gptkit.plugins.prompt_styles.styles:ChatTemplate",
    ]
