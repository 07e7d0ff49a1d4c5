"""The one place the server gets its models from: the library layer's loader.

The model and the drafts requests may name are loaded here, at start-up, from
the operator's settings; nothing a request says is ever opened."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from gptkit.api.serving import load_drafts

if TYPE_CHECKING:
    from gptkit.api.model import LanguageModel
    from gptkit.api.serving import GPTModel
    from gptkit.api.settings import LoadSettings

__all__ = ["default_name", "load_drafts", "load_language_model", "load_model"]


def load_model(settings: LoadSettings) -> tuple[GPTModel, str]:
    """(model in eval mode, the name clients use for it): the weights the
    settings name (``gptkit.load``), or a random init of their preset."""
    lm, name = load_language_model(settings)
    return lm.model, name


def load_language_model(settings: LoadSettings) -> tuple[LanguageModel, str]:
    """(the model with its tokenizer, the name clients use for it)."""
    from gptkit.api.model import LanguageModel, remember_style

    lm = LanguageModel.from_settings(settings)
    remember_style(lm)  # /v1/chat/completions formats messages in it
    if settings.weights is not None:
        return lm, default_name(settings.weights)
    return lm, settings.preset_name()


def default_name(spec: str) -> str:
    """``hf:gpt2`` -> ``gpt2``; ``hf:org/name@rev`` -> ``org/name``;
    ``runs/NAME`` -> ``NAME``; ``book:model.pth`` -> ``model``."""
    prefix, sep, rest = spec.partition(":")
    location = rest if sep and len(prefix) > 1 else spec
    if sep and prefix == "hf" and not Path(location).exists():
        return location.split("@")[0]  # a Hub repository
    path = Path(location.rstrip("/"))
    if path.name.startswith("step-") and path.parent.name == "checkpoints":
        return f"{path.parent.parent.name}/{path.name}"
    if path.suffix in (".pth", ".pt", ".safetensors"):
        return path.stem
    return path.name
