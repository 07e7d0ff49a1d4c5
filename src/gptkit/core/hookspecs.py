"""The hooks a gptkit plugin implements (torch-free).

Each ``register_<kind>`` hook returns a list of components: a component class, a
:class:`~gptkit.core.interfaces.Component` (name, ``"module:Class"`` target,
summary; the class is imported only when it is used), or a ``"module:Class"``
string (imported when the registry is built). The registry collects them from
the built-in plugins first, then from entry-point plugins sorted by name; a
duplicate name keeps the first and reports the conflict.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import click

PROJECT = "gptkit"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_samplers() -> list[Any]:
    """Samplers: :class:`~gptkit.core.interfaces.Sampler` (per-token) or
    :class:`~gptkit.core.interfaces.SearchStrategy` (whole-sequence) classes.

    Called once, when the registry is first used.

    :return: a list of components.
    """


@hookspec
def register_schedulers() -> list[Any]:
    """Learning-rate schedulers: :class:`~gptkit.core.interfaces.Scheduler` classes.

    Called once, when the registry is first used.

    :return: a list of components.
    """


@hookspec
def register_weight_loaders() -> list[Any]:
    """Weight loaders: :class:`~gptkit.core.interfaces.WeightLoader` classes, whose
    ``name`` is the prefix of the weight specs they read (``hf:gpt2``).

    Called once, when the registry is first used.

    :return: a list of components.
    """


@hookspec
def register_loggers() -> list[Any]:
    """Training loggers: :class:`~gptkit.core.interfaces.Logger` classes, chosen
    with ``gptkit train --logger NAME``.

    Called once, when the registry is first used.

    :return: a list of components.
    """


@hookspec
def register_corpora() -> list[Any]:
    """Text corpora: :class:`~gptkit.core.interfaces.Corpus` classes, chosen with
    ``--corpus NAME``.

    Called once, when the registry is first used.

    :return: a list of components.
    """


@hookspec
def register_quantizers() -> list[Any]:
    """Weight quantizers: :class:`~gptkit.core.interfaces.Quantizer` classes,
    chosen with ``--quantize NAME`` (``gptkit generate``, ``eval``, ``bench
    sampling``) or ``quantize_model(model, NAME)``.

    Called once, when the registry is first used.

    :return: a list of components.
    """


@hookspec
def register_architectures() -> list[Any]:
    """Model families: :class:`~gptkit.core.interfaces.Architecture` classes,
    chosen with ``--arch NAME`` (or a preset of theirs) and by the
    ``model_type`` of a Hugging Face checkpoint.

    Called once, when the registry is first used.

    :return: a list of components.
    """


@hookspec
def register_prompt_styles() -> list[Any]:
    """Prompt styles: :class:`~gptkit.core.interfaces.PromptStyle` classes
    (``gptkit finetune --prompt-style NAME``). :return: a list of components."""


@hookspec
def register_adapters() -> list[Any]:
    """Adapters: :class:`~gptkit.core.interfaces.Adapter` classes (``gptkit
    finetune --lora [NAME:]KEY=VALUE,...``). :return: a list of components."""


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add click commands to the ``gptkit`` command group.

    Called once, the first time the command line looks up a command it does not
    know or lists its commands (``gptkit --help``).

    :param cli: the root ``gptkit`` group; call ``cli.add_command(...)``.
    """
