"""gptkit: pretrain, evaluate, sample from and load GPT-2-style language models.

Importing this package is cheap: it does not import torch. The public API is
loaded lazily on first attribute access (``gptkit.GPTModel`` imports torch then).
"""

from __future__ import annotations

import importlib
from typing import Any

from gptkit._version import __version__
from gptkit.core.hookspecs import hookimpl

# name -> "module:attribute", resolved on first access (PEP 562).
_LAZY = {
    "GPTConfig": "gptkit.core.config:GPTConfig",
    "PRESETS": "gptkit.core.config:PRESETS",
    "GPTModel": "gptkit.core.model:GPTModel",
    "get_tokenizer": "gptkit.core.tokenizer:get_tokenizer",
    "load_weights": "gptkit.core.weights:load_weights",
    "generate": "gptkit.core.generate:generate",
    "get_registry": "gptkit.core.registry:get_registry",
    "Component": "gptkit.core.interfaces:Component",
    "Sampler": "gptkit.core.interfaces:Sampler",
    "Scheduler": "gptkit.core.interfaces:Scheduler",
    "WeightLoader": "gptkit.core.interfaces:WeightLoader",
    "Logger": "gptkit.core.interfaces:Logger",
    "Corpus": "gptkit.core.interfaces:Corpus",
    "GptkitError": "gptkit.core.errors:GptkitError",
}

__all__ = ["__version__", "hookimpl", *_LAZY]


def __getattr__(name: str) -> Any:
    try:
        target = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'gptkit' has no attribute {name!r}") from None
    module, _, attr = target.partition(":")
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value
