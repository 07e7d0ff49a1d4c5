"""gptkit: pretrain, evaluate, sample from and load GPT-2-style language models.

>>> import gptkit
>>> lm = gptkit.load("hf:gpt2")                                     # doctest: +SKIP
>>> lm.generate("Every effort moves you", max_new_tokens=20)       # doctest: +SKIP
>>> run = gptkit.train(corpus="the-verdict", preset="tiny")         # doctest: +SKIP
>>> run.plot()                                                      # doctest: +SKIP

Importing this package is cheap: it does not import torch. The public names are
loaded on first use (``gptkit.load`` imports torch when it is called).
"""

from __future__ import annotations

import importlib
from typing import Any

from gptkit._version import __version__
from gptkit.core.hookspecs import hookimpl

# name -> "module:attribute", resolved on first access (PEP 562).
_LAZY = {
    # the library
    "load": "gptkit.api.model:load",
    "LanguageModel": "gptkit.api.model:LanguageModel",
    "train": "gptkit.api.runs:train",
    "resume": "gptkit.api.runs:resume",
    "Run": "gptkit.api.runs:Run",
    "export": "gptkit.api.export:export",
    "prepare": "gptkit.api.prepare:prepare",
    # settings (every keyword of load/generate/evaluate/train)
    "TrainSettings": "gptkit.core.settings:TrainSettings",
    "EvalSettings": "gptkit.core.settings:EvalSettings",
    "GenerateSettings": "gptkit.core.settings:GenerateSettings",
    "LoadSettings": "gptkit.core.settings:LoadSettings",
    "ExportSettings": "gptkit.api.export:ExportSettings",
    "PrepareSettings": "gptkit.api.prepare:PrepareSettings",
    # errors
    "GptkitError": "gptkit.errors:GptkitError",
    "SettingError": "gptkit.errors:SettingError",
    # building blocks
    "GPTConfig": "gptkit.core.config:GPTConfig",
    "PRESETS": "gptkit.core.config:PRESETS",
    "GPTModel": "gptkit.core.model:GPTModel",
    "get_tokenizer": "gptkit.core.tokenizer:get_tokenizer",
    "load_weights": "gptkit.core.weights:load_weights",
    "get_registry": "gptkit.core.registry:get_registry",
    # plugin authors' base classes
    "Component": "gptkit.core.interfaces:Component",
    "Sampler": "gptkit.core.interfaces:Sampler",
    "SearchStrategy": "gptkit.core.interfaces:SearchStrategy",
    "Scheduler": "gptkit.core.interfaces:Scheduler",
    "WeightLoader": "gptkit.core.interfaces:WeightLoader",
    "Logger": "gptkit.core.interfaces:Logger",
    "Corpus": "gptkit.core.interfaces:Corpus",
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


def __dir__() -> list[str]:
    return sorted(__all__)
