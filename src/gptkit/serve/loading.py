"""The one place the server gets its models from: the library layer's loader.

The model and the drafts requests may name are loaded here, at start-up, from
the operator's settings; nothing a request says is ever opened."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from gptkit.errors import GptkitError

if TYPE_CHECKING:
    from gptkit.api.model import LanguageModel
    from gptkit.api.settings import LoadSettings
    from gptkit.core.model import GPTModel


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


def load_drafts(
    model: GPTModel, specs: dict[str, str], tokenizer: Any = None
) -> dict[str, GPTModel]:
    """The draft models ``{name: spec}``, on ``model``'s device and dtype; a
    draft must share the model's tokenizer (it proposes the model's tokens)."""
    from gptkit.formats.models import model_from_spec
    from gptkit.formats.tokenizers import tokenizer_for

    param = next(model.parameters())
    drafts = {}
    for name, spec in specs.items():
        draft, loaded = model_from_spec(spec, device=param.device, dtype=param.dtype)
        if tokenizer is not None:
            theirs = tokenizer_for(draft.cfg, loaded.extra)
            if theirs.fingerprint() != tokenizer.fingerprint():
                raise GptkitError(
                    f"--draft {name}: it uses the {theirs.spec} tokenizer, not the"
                    f" model's {tokenizer.spec}; a draft and its model must share"
                    " one tokenizer"
                )
        if draft.cfg.vocab_size < model.cfg.vocab_size:
            raise GptkitError(
                f"--draft {name}: its vocabulary has {draft.cfg.vocab_size} tokens,"
                f" the model's {model.cfg.vocab_size}; a draft must cover the model's"
            )
        drafts[name] = draft.eval()
    return drafts


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
