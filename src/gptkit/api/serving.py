"""What the HTTP server (:mod:`gptkit.serve`) needs from the library besides
``load`` and generation: the draft models the operator names, the test for a
search strategy, and the types it annotates with. The server reaches the engine's
plugin contract only through here (and the registry), so its HTTP modules import
no ``gptkit.core`` module (the contract in ``pyproject.toml``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gptkit.core.interfaces import PromptStyle, SearchStrategy
from gptkit.errors import GptkitError

if TYPE_CHECKING:
    from gptkit.core.model import GPTModel as GPTModel

__all__ = ["GPTModel", "PromptStyle", "is_search_strategy", "load_drafts"]


def is_search_strategy(sampler: Any) -> bool:
    """Whether a sampler (an instance or its class) searches over whole
    sequences (beam search) instead of drawing one token per step."""
    if isinstance(sampler, type):
        return issubclass(sampler, SearchStrategy)
    return isinstance(sampler, SearchStrategy)


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
