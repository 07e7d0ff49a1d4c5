"""Which sampler a generation uses, from its settings (the same rules for
``gptkit generate``, :meth:`LanguageModel.generate` and the HTTP server)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gptkit.core.settings import GenerateSettings
from gptkit.errors import SettingError

#: Settings that are options of the chosen sampler.
SHORTCUTS = ("temperature", "top_k", "top_p", "min_p", "num_beams", "draft")
#: Settings (or options) the engine applies whatever the sampler.
ENGINE_OPTIONS = ("repetition_penalty", "no_repeat_ngram_size")


@dataclass
class SamplerChoice:
    """A sampler, ready to use, and the engine options that go with it."""

    name: str
    sampler: Any  # a Sampler or a SearchStrategy instance
    engine: dict[str, Any]

    @property
    def streams(self) -> bool:
        """Whether text comes token by token (a search strategy returns whole
        sequences at the end)."""
        return bool(getattr(self.sampler, "streams", False))


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def default_sampler(options: Mapping[str, Any]) -> str:
    """The sampler the given options ask for when none is named: speculative
    with a ``draft``, beam with
    ``num_beams`` > 1, top-p with ``top_p``, min-p with ``min_p``, top-k when
    ``temperature`` > 0 or ``top_k`` is given (the book's ``generate``), else
    greedy."""
    if options.get("draft"):
        return "speculative"
    if (_number(options.get("num_beams")) or 1) > 1:
        return "beam"
    if "top_p" in options:
        return "top-p"
    if "min_p" in options:
        return "min-p"
    if (_number(options.get("temperature")) or 0) > 0 or "top_k" in options:
        return "top-k"
    return "greedy"


def resolve_sampler(settings: GenerateSettings) -> SamplerChoice:
    """The sampler the settings name or imply, created with its options.

    Shortcut settings and ``options`` together are the sampler's options
    (``options`` wins on a clash); the penalties, given either way, go to the
    engine. An option the sampler does not have is an error that names the
    sampler and lists its options.
    """
    from gptkit.core.registry import get_registry

    options: dict[str, Any] = {
        k: getattr(settings, k) for k in SHORTCUTS if getattr(settings, k) is not None
    }
    options.update(settings.options)
    engine = {
        k: getattr(settings, k)
        for k in ENGINE_OPTIONS
        if getattr(settings, k) is not None
    }
    for key in ENGINE_OPTIONS:
        if key in options:
            engine[key] = options.pop(key)
    name = settings.sampler or default_sampler(options)
    if settings.sampler is None:
        # Implied neutral values are not options of the implied sampler.
        if name == "greedy" and _number(options.get("temperature")) == 0:
            options.pop("temperature")
        if name != "beam" and _number(options.get("num_beams")) == 1:
            options.pop("num_beams")
    sampler = get_registry().samplers.create(name, options)
    return SamplerChoice(name, sampler, _engine_values(engine))


def _engine_values(engine: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in engine.items():
        number = _number(value)
        if number is None:
            raise SettingError(f"{{{key}}} must be a number, got {value!r}")
        out[key] = int(number) if key == "no_repeat_ngram_size" else number
    return out
