"""A model from a weight spec: the loader plugin's weights built into a model, or
rebuilt quantized as they were saved, or quantized on load (``--quantize``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from gptkit.core.interfaces import LoadedWeights
from gptkit.core.model import GPTModel
from gptkit.core.quantize import get_quantizer, quantization_of, quantize_model
from gptkit.core.weights import build_model, load_weights
from gptkit.errors import GptkitError
from gptkit.formats.quantized import load_quantized


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


def accelerate_bf16(model: GPTModel) -> GPTModel:
    """``--dtype bf16`` decoding on the CPU: where the built-in ``bf16``
    quantizer has a kernel for this CPU (AVX512-BF16), every linear layer
    becomes its bf16 layer (same weights, gptkit's bf16 dot-product kernel for
    decode-sized inputs; PyTorch's own bf16 product is slower than float32
    there); where the CPU emulates bf16, one warning line on stderr says so,
    with the speed measured. Other models (float32, quantized, not on the CPU)
    are returned as they are. Inference only: the layers hold buffers."""
    import sys

    first = next(model.parameters(), None)
    if first is None or quantization_of(model) is not None:
        return model
    if first.dtype != torch.bfloat16 or first.device.type != "cpu":
        return model
    try:
        quantizer = get_quantizer("bf16")
    except GptkitError:  # the plugin is not installed
        return model
    support = getattr(quantizer, "cpu_support", None)
    if support is None:
        return model
    fast, note = support()
    if note:
        sys.stderr.write(f"gptkit: {note}\n")
    return quantize_model(model, quantizer) if fast else model
