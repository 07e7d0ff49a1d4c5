"""OpenAI's sampling fields and gptkit's extension fields -> a sampler plugin.

Without ``sampler`` the fields mean what they mean in OpenAI's API:
``temperature`` 0 is greedy decoding (the ``greedy`` sampler); otherwise
``top_p`` < 1 picks ``top-p``, ``min_p`` picks ``min-p``, and the rest
samples from the whole distribution at ``temperature`` (``top-k`` without a
``top_k`` cut, unless ``top_k`` is given). The temperature defaults to 1, as
OpenAI's does.

With ``sampler`` (any installed sampler plugin), ``sampler_options`` are its
options, and the shortcut fields given in the request (``temperature``,
``top_p``, ``top_k``, ``min_p``) become options of the same name. A shortcut
the sampler does not have is an error, never silently dropped, unless it asks
for nothing (OpenAI's defaults temperature 1 and top_p 1; temperature 0 for a
deterministic sampler such as ``greedy`` or ``beam``): many clients send those
fields with every request.

``repetition_penalty`` and ``no_repeat_ngram_size`` are engine options that
work with every sampler (fields, or keys of ``sampler_options``, as ``-o``
takes them in ``gptkit generate``).

An option whose metadata declares a ``resource`` names something to open (the
speculative sampler's ``draft`` weights, and how to quantize them): a request
never gives such a value to the sampler. ``draft`` may only name one of the
drafts the operator loaded at start-up (``gptkit serve --draft NAME=SPEC``),
which the sampler is then handed; any other resource option is refused. No
path or Hub repository a client names is ever opened.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from gptkit.api.sampling import ENGINE_OPTIONS, SamplerChoice
from gptkit.errors import GptkitError
from gptkit.serve.errors import bad_request
from gptkit.serve.schemas import CompletionRequest

#: OpenAI's fields and vLLM's extensions that are options of a sampler.
SHORTCUTS = ("temperature", "top_p", "top_k", "min_p")


def openai_choice(shortcuts: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(sampler name, options) for OpenAI's fields without a ``sampler``."""
    temperature = shortcuts.get("temperature", 1.0)
    if temperature == 0:
        return "greedy", {}
    options: dict[str, Any] = {"temperature": temperature}
    top_p = shortcuts.get("top_p")
    if "min_p" in shortcuts:
        options["min_p"] = shortcuts["min_p"]
        if top_p is not None and top_p < 1:
            options["top_p"] = top_p
        options["top_k"] = shortcuts.get("top_k")
        return "min-p", options
    if top_p is not None and top_p < 1:
        options["top_p"] = top_p
        options["top_k"] = shortcuts.get("top_k")
        return "top-p", options
    options["top_k"] = shortcuts.get("top_k")  # None: the whole distribution
    return "top-k", options


def request_sampler(
    req: CompletionRequest, drafts: dict[str, Any] | None = None
) -> SamplerChoice:
    """The sampler and engine options of a request, through the library's
    :func:`~gptkit.api.sampling.resolve_sampler` (the rules ``gptkit
    generate`` and ``LanguageModel.generate`` follow); a 400 APIError naming
    the field at fault otherwise."""
    from gptkit.api.sampling import resolve_sampler
    from gptkit.api.settings import GenerateSettings
    from gptkit.core.registry import get_registry

    given = {
        k: getattr(req, k)
        for k in SHORTCUTS
        if k in req.model_fields_set and getattr(req, k) is not None
    }
    options = dict(req.sampler_options or {})
    settings: dict[str, Any] = {
        k: getattr(req, k) for k in ENGINE_OPTIONS if getattr(req, k) is not None
    }
    provided: dict[str, Any] = {}
    if req.sampler is None:
        if set(options) - set(ENGINE_OPTIONS):
            raise bad_request(
                "sampler_options needs a sampler (the extension field 'sampler')",
                "sampler_options",
            )
        name, implied = openai_choice(given)
        settings.update(sampler=name, options={**implied, **options})
    else:
        samplers = get_registry().samplers
        if req.sampler not in samplers:
            raise bad_request(
                f"unknown sampler {req.sampler!r}; installed:"
                f" {', '.join(samplers.names())}",
                "sampler",
                "unknown_sampler",
            )
        try:
            cls = samplers.get(req.sampler)
        except GptkitError as exc:  # a plugin that fails to import
            raise bad_request(str(exc), "sampler") from None
        fields = {f.name for f in dataclasses.fields(cls.Options)}
        for key, value in given.items():
            if key not in fields and not _neutral(cls, key, value):
                raise bad_request(
                    f"sampler {req.sampler!r} has no option {key!r}; its options:"
                    f" {', '.join(sorted(fields)) or '(none)'}",
                    key,
                )
        shortcuts = {k: v for k, v in given.items() if k in fields}
        provided = _resources(cls, options, drafts or {})
        for key in getattr(cls, "required_options", ()):
            if key not in options and key not in provided and key not in shortcuts:
                allowed = ", ".join(sorted(drafts or {})) or "none loaded"
                raise bad_request(
                    f"sampler {req.sampler!r} needs sampler_options.{key}"
                    + (f" (drafts: {allowed})" if key == "draft" else ""),
                    f"sampler_options.{key}",
                    "missing_option",
                )
        settings.update(sampler=req.sampler, options=options, **shortcuts)
    try:
        choice = resolve_sampler(GenerateSettings.create(settings))
    except GptkitError as exc:
        raise bad_request(
            str(exc), "sampler_options", "invalid_sampler_options"
        ) from None
    _check_engine_options(choice.engine)
    for key, model in provided.items():
        choice.sampler.use_resource(key, model)
    return choice


def _resources(
    cls: type, options: dict[str, Any], drafts: dict[str, Any]
) -> dict[str, Any]:
    """Take the resource options out of ``options``: ``{option: model}`` for a
    ``weights`` option naming one of the operator's drafts; a 400 for any
    other value, before anything is opened."""
    provided = {}
    for f in dataclasses.fields(cls.Options):
        kind = f.metadata.get("resource")
        if kind is None or f.name not in options:
            continue
        value = options.pop(f.name)
        param = f"sampler_options.{f.name}"
        if kind != "weights":
            raise bad_request(
                f"{param}: chosen by the operator when the server starts; a request"
                " cannot set it",
                param,
                "operator_only",
            )
        if not isinstance(value, str) or value not in drafts:
            allowed = ", ".join(sorted(drafts)) or "none (gptkit serve --draft)"
            raise bad_request(
                f"{param}: name one of the drafts this server loaded: {allowed}",
                param,
                "unknown_draft",
            )
        provided[f.name] = drafts[value]
    return provided


def _neutral(cls: type, key: str, value: Any) -> bool:
    """Whether a shortcut asks for nothing a sampler without it would not do:
    OpenAI's defaults (temperature 1, top_p 1), or temperature 0 (greedy) for
    a deterministic sampler or a search strategy."""
    from gptkit.api.serving import is_search_strategy

    if (key, value) in (("temperature", 1.0), ("top_p", 1.0)):
        return True
    deterministic = is_search_strategy(cls) or (
        getattr(cls, "deterministic", False) is True
    )
    return key == "temperature" and value == 0 and deterministic


def _check_engine_options(engine: dict[str, Any]) -> None:
    """Penalties given as ``sampler_options`` keys skip the settings' bounds."""
    if engine.get("repetition_penalty", 1.0) <= 0:
        raise bad_request(
            "repetition_penalty must be > 0", "sampler_options", "invalid_option"
        )
    if engine.get("no_repeat_ngram_size", 0) < 0:
        raise bad_request(
            "no_repeat_ngram_size must be >= 0", "sampler_options", "invalid_option"
        )
