"""Built-in weight loaders, chosen by the weight spec's prefix (``hf:gpt2``,
``book:model.pth``); a bare path goes to the loader whose ``accepts`` says yes,
else to ``native``."""

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
        Component(
            "book",
            "gptkit.plugins.loaders.book:BookLoader",
            "State-dict .pth files saved by the book's code (model.pth,"
            " model_and_optimizer.pth).",
        ),
        Component(
            "hf",
            "gptkit.plugins.loaders.hf:HFLoader",
            "GPT-2 in Hugging Face format: gpt2 ... gpt2-xl, org/repo[@revision]"
            " from the Hub, or a local directory.",
        ),
    ]
