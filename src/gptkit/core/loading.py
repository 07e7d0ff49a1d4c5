"""A model from a weight spec: the loader plugin's weights built into a model, or
rebuilt quantized as they were saved, or quantized on load (``--quantize``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from gptkit.core.interfaces import LoadedWeights
from gptkit.core.model import GPTModel
from gptkit.core.quantize import load_quantized, quantize_model
from gptkit.core.weights import build_model, load_weights


def model_from_spec(
    spec: str,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
    hints: Mapping[str, Any] | None = None,
    quantize: str | None = None,
) -> tuple[GPTModel, LoadedWeights]:
    """The model a weight spec names, on ``device`` in ``dtype`` (``None``: the
    file's), and what its loader returned; ``loaded.state_dict`` is then the
    model's own state dict (no copy). ``hints``: see :func:`load_weights`.

    ``quantize``: a quantizer spec (``int8``, ``int4:group_size=32``; see
    :mod:`gptkit.core.quantize`). Weights saved quantized are rebuilt as they
    were saved, without quantizing again."""
    loaded = load_weights(spec, hints)
    record = (loaded.extra.get("checkpoint") or {}).get("quantization")
    if record is not None:
        model = load_quantized(
            loaded.config, loaded.state_dict, record, quantize, device, dtype
        )
    else:
        model = build_model(
            loaded.config, loaded.state_dict, device=device, dtype=dtype, consume=True
        )
        if quantize:
            quantize_model(model, quantize)
    loaded.state_dict = model.state_dict()
    return model, loaded
