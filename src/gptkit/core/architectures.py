"""Model families by name, by preset, by config and by Hugging Face
``model_type`` (torch-free: the architecture components are looked up in the
registry; their models are imported when one is built).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gptkit.errors import GptkitError

if TYPE_CHECKING:
    from gptkit.core.interfaces import Architecture

#: How a package adds a family (said wherever an unknown one is met).
HOW_TO_ADD = (
    "a package adds one with the register_architectures hook (see"
    " docs/model-families.md)"
)


def known_architectures() -> list[str]:
    """The names of every registered architecture (imports nothing)."""
    from gptkit.core.registry import get_registry

    return get_registry().architectures.names()


def get_architecture(name: str) -> Architecture:
    """The architecture component called ``name``; an unknown one is one line
    listing the known families and how to add one."""
    from gptkit.core.registry import get_registry

    components = get_registry().architectures
    if name not in components:
        raise GptkitError(
            f"unknown model family {name!r}; known: {', '.join(components.names())}"
            f" ({HOW_TO_ADD})"
        )
    return components.create(name)


def architecture_of(cfg: Any) -> Architecture:
    """The architecture that builds models of config ``cfg``."""
    return get_architecture(getattr(type(cfg), "arch", "gpt2"))


def build(cfg: Any) -> Any:
    """A freshly initialised model of ``cfg`` (any family)."""
    return architecture_of(cfg).build(cfg)


def all_presets() -> dict[str, Any]:
    """Every architecture's presets, GPT-2's first."""
    presets: dict[str, Any] = {}
    for name in known_architectures():
        for preset, cfg in get_architecture(name).presets().items():
            presets.setdefault(preset, cfg)
    return presets


def preset_architecture(preset: str) -> str:
    """The family of a preset."""
    if preset not in (presets := all_presets()):
        raise GptkitError(
            f"unknown preset {preset!r}; choose one of: {', '.join(presets)}"
        )
    return getattr(type(presets[preset]), "arch", "gpt2")
