"""Weight-only quantization of a model: the quantizer plugins, applied to every
linear layer (the hook side; quantized checkpoints are
:mod:`gptkit.formats.quantized`).

A quantizer is named by a spec, ``NAME`` or ``NAME:key=value,key=value``
(``int8``, ``int4:group_size=32``); the keys are the quantizer's options.
:func:`quantize_model` replaces each ``nn.Linear`` of a model, the output head
included, by the module the quantizer returns. A tied head (GPT-2 shares it
with the token embedding) gets a quantized copy; the embedding itself stays in
float, as only one row of it is read per token.

A quantized model saved with ``save_quantized`` is a native checkpoint
directory (``model.safetensors`` + ``config.json``) whose config records the
quantizer and its options; loading it (any ``--weights`` path) rebuilds the
quantized layers from shapes alone and assigns the stored integers — nothing is
quantized again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from gptkit.core.interfaces import Quantizer
from gptkit.core.model import GPTModel
from gptkit.core.options import parse_pairs
from gptkit.errors import GptkitError

#: config.json key of a quantized checkpoint: {"method": NAME, "options": {...}}
CONFIG_KEY = "quantization"


def parse_spec(spec: str) -> tuple[str, dict[str, str]]:
    """``"int4:group_size=32"`` -> ``("int4", {"group_size": "32"})``."""
    name, _, rest = spec.strip().partition(":")
    if not name:
        raise GptkitError(f"quantize spec {spec!r} names no quantizer")
    pairs = [p for p in rest.split(",") if p.strip()]
    return name.strip(), parse_pairs(pairs)


def get_quantizer(
    spec: str | Quantizer, options: Mapping[str, Any] | None = None
) -> Quantizer:
    """The quantizer a spec names, with its options (the spec's, then
    ``options``) validated; a :class:`Quantizer` instance is returned as is."""
    if isinstance(spec, Quantizer):
        if options:
            raise TypeError("options go with a quantizer name, not an instance")
        return spec
    from gptkit.core.registry import get_registry

    name, given = parse_spec(spec)
    return get_registry().quantizers.create(name, {**given, **(options or {})})


def describe(quantizer: Quantizer) -> dict[str, Any]:
    """What a checkpoint records: ``{"method": name, "options": {...}}``."""
    return {"method": quantizer.name, "options": dataclasses.asdict(quantizer.options)}


def quantization_of(model: nn.Module) -> dict[str, Any] | None:
    """The record of a quantized model (None when it is not quantized)."""
    return getattr(model, "quantization", None)


def quantize_model(model: GPTModel, spec: str | Quantizer, **options: Any) -> GPTModel:
    """Quantize every linear layer of ``model`` in place (see the module docs);
    returns the model. Keyword ``options`` are the quantizer's options."""
    quantizer = get_quantizer(spec, options)
    existing = quantization_of(model)
    if existing is not None:
        raise GptkitError(
            f"the model is already quantized ({existing['method']}); load its"
            " float weights to quantize it another way"
        )
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    with torch.no_grad():
        for name, linear in linears:
            replacement = quantizer.quantize_linear(linear, name)
            parent_name, _, attr = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, attr, replacement)
            del linear
    model.quantization = describe(quantizer)  # type: ignore[assignment]
    model.fused_step = quantizer.fused_step(model)  # see GPTModel.forward
    return model
