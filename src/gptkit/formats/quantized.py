"""Quantized checkpoints: a quantized model saved as a native checkpoint
directory whose ``config.json`` records the quantizer and its options, and
rebuilt from it (quantized layers from shapes alone, the stored integers
assigned: nothing is quantized again)."""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gptkit._version import __version__
from gptkit.core.config import GPTConfig
from gptkit.core.model import GPTModel
from gptkit.core.quantize import (
    CONFIG_KEY,
    get_quantizer,
    parse_spec,
    quantization_of,
    quantize_model,
)
from gptkit.core.weights import meta_model
from gptkit.errors import GptkitError


def build_quantized_model(
    cfg: GPTConfig,
    state: dict[str, torch.Tensor],
    record: Mapping[str, Any],
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
    options: Mapping[str, Any] | None = None,
) -> GPTModel:
    """A quantized model from a quantized checkpoint's tensors: quantize a meta
    model the same way (shapes only), then assign ``state``. ``options``
    override run-time options of the recorded quantizer (its ``backend``)."""
    method = record.get("method")
    saved = dict(record.get("options") or {})
    quantizer = get_quantizer(str(method), {**saved, **(options or {})})
    chosen = dataclasses.asdict(quantizer.options)
    changed = [k for k in saved if k != "backend" and saved[k] != chosen.get(k)]
    if changed:
        key = changed[0]
        raise GptkitError(
            f"the weights are quantized with {method} {key}={saved[key]};"
            f" they cannot be loaded with {key}={chosen.get(key)}"
        )
    model = meta_model(cfg)
    layers = {n for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    model = quantize_model(model, quantizer)
    converted = {}
    for key in list(state):
        tensor = state.pop(key)
        # Float tensors of the float layers follow ``dtype``; a quantized
        # layer's scales and zero points keep the dtype they were saved in.
        in_layer = key.rpartition(".")[0] in layers
        cast = dtype if tensor.is_floating_point() and not in_layer else None
        converted[key] = tensor.to(device=device, dtype=cast)
    expected = set(model.state_dict())
    missing = sorted(expected - set(converted))
    unexpected = sorted(set(converted) - expected)
    if missing or unexpected:
        what = f"lack {missing[0]}" if missing else f"have unexpected {unexpected[0]}"
        raise GptkitError(f"quantized weights {what} ({method})")
    try:
        model.load_state_dict(converted, strict=True, assign=True)
    except RuntimeError as exc:
        raise GptkitError(f"quantized weights do not fit the model: {exc}") from None
    return model.eval()


def load_quantized(
    cfg: GPTConfig,
    state: dict[str, torch.Tensor],
    record: Mapping[str, Any],
    requested: str | None,
    device: torch.device | str,
    dtype: torch.dtype | None,
) -> GPTModel:
    """The model of a quantized checkpoint; ``requested`` (a spec, or None) may
    only repeat the recorded quantizer, with other run-time options."""
    options: dict[str, Any] = {}
    if requested:
        name, options = parse_spec(requested)
        if name != record.get("method"):
            raise GptkitError(
                f"the weights are already quantized with {record.get('method')};"
                f" they cannot be quantized with {name}"
            )
    return build_quantized_model(
        cfg, state, record, device=device, dtype=dtype, options=options
    )


def save_quantized(model: GPTModel, directory: str | Path) -> Path:
    """Write a quantized model as a native checkpoint directory (atomically:
    a temporary sibling renamed into place). Refuses an existing non-empty
    directory."""
    from safetensors.torch import save_file

    from gptkit.core.checkpoints.layout import CONFIG, FORMAT, WEIGHTS, weights_metadata
    from gptkit.system.storage import (
        default_file_mode,
        fsync_dir,
        fsync_file,
        write_json_atomic,
    )

    record = quantization_of(model)
    if record is None:
        raise GptkitError("the model is not quantized; call quantize_model first")
    final = Path(directory)
    if final.exists() and (not final.is_dir() or any(final.iterdir())):
        raise GptkitError(f"{final} exists and is not empty; choose another directory")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        state = {
            k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()
        }
        save_file(state, tmp / WEIGHTS, metadata=weights_metadata(model.cfg))
        os.chmod(tmp / WEIGHTS, default_file_mode())
        fsync_file(tmp / WEIGHTS)
        meta = {
            "format": FORMAT,
            "gptkit_version": __version__,
            "step": 0,
            "model": model.cfg.to_dict(),
            CONFIG_KEY: record,
        }
        write_json_atomic(tmp / CONFIG, meta)
        fsync_dir(tmp)
        if final.exists():
            final.rmdir()
        os.replace(tmp, final)
        fsync_dir(final.parent)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise GptkitError(f"could not write {final}: {exc}") from exc
    return final
