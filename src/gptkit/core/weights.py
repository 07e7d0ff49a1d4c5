"""Weight specs -> loader plugins -> a ready model.

A spec names its loader by prefix (``hf:gpt2``, ``book:model.pth``); a bare path
goes to the first loader whose ``accepts`` says yes, else to ``native`` (gptkit
run and checkpoint directories).

Loaders return CPU tensors in the file's dtype; :func:`build_model` casts and
moves them one tensor at a time and assigns them to a model built on the meta
device, so the weights are never held twice.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from gptkit.core.config import GPTConfig
from gptkit.core.interfaces import LoadedWeights
from gptkit.core.model import GPTModel
from gptkit.errors import GptkitError, SettingError


def split_spec(spec: str) -> tuple[str, str]:
    """``"hf:gpt2"`` -> ``("hf", "gpt2")``; a bare path -> the first loader
    whose ``accepts`` recognises it."""
    from gptkit.core.registry import get_registry

    loaders = get_registry().loaders
    prefix, sep, rest = spec.partition(":")
    if sep and prefix in loaders:
        return prefix, rest
    for name in loaders.names():
        if loaders.get(name).accepts(spec):
            return name, spec
    if not Path(spec).expanduser().exists():
        raise GptkitError(
            f"weights not found: {spec} (no such file or directory; a model on the"
            " Hugging Face Hub is hf:NAME)"
        )
    prefixes = ", ".join(f"{name}:" for name in loaders.names())
    raise GptkitError(
        f"no weight loader recognises {spec}; name its loader with a prefix"
        f" ({prefixes})"
    )


def load_weights(spec: str, hints: Mapping[str, Any] | None = None) -> LoadedWeights:
    """Read the weights a spec names (CPU tensors, in the file's dtype).

    ``hints`` are model settings the user gave explicitly (``n_heads``,
    ``preset``, ...). A loader whose ``Options`` has a field of that name gets
    the value (the book's .pth files do not record the number of heads). A
    model setting the loader reads from the file instead must agree with the
    hint, else it is an error. ``None`` values are dropped.
    """
    from gptkit.core.registry import get_registry

    name, location = split_spec(spec)
    loader_cls = get_registry().loaders.get(name)
    fields = {f.name for f in dataclasses.fields(loader_cls.Options)}
    given = {k: v for k, v in (hints or {}).items() if v is not None}
    loader = loader_cls({k: v for k, v in given.items() if k in fields})
    loaded = loader.load(location)
    model_fields = {f.name for f in dataclasses.fields(GPTConfig)}
    for key, value in given.items():
        actual = getattr(loaded.config, key, value)
        if key not in fields and key in model_fields and actual != value:
            raise SettingError(
                f"{{{key}}} {value} does not match the weights: {spec} has {key}"
                f" {actual} (the {name} loader reads it from the file)"
            )
    preset = given.get("preset")
    if preset is not None and "preset" not in fields:
        from gptkit.core.config import get_preset

        shape = ("emb_dim", "n_layers", "n_heads")
        expected = get_preset(preset)
        for key in shape:
            if getattr(expected, key) != getattr(loaded.config, key):
                raise SettingError(
                    f"{{preset}} {preset} does not match the weights: {spec} has"
                    f" {key} {getattr(loaded.config, key)}, {preset} has"
                    f" {getattr(expected, key)} (drop {{preset}}: the weights"
                    " decide the shape)"
                )
    return loaded


class _SkipInitOnMeta(TorchFunctionMode):
    """Skips random initialisation of meta tensors: there is nothing to fill,
    and the first ``normal_`` on the meta device imports torch's Python
    decompositions (hundreds of modules, seconds at every start-up)."""

    def __torch_function__(
        self,
        func: Any,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        target = args[0] if args else kwargs.get("tensor")  # init passes tensor=...
        is_init = getattr(func, "__module__", None) == "torch.nn.init" or func in (
            torch.Tensor.normal_,
            torch.Tensor.uniform_,
        )
        if is_init and isinstance(target, torch.Tensor) and target.is_meta:
            return target
        return func(*args, **kwargs)


def meta_model(cfg: GPTConfig) -> GPTModel:
    """A GPTModel on the meta device: shapes and names, no memory, no init."""
    try:
        with torch.device("meta"), _SkipInitOnMeta():
            return GPTModel(cfg)
    except RuntimeError as exc:  # sizes past what a tensor can hold
        if "overflow" not in str(exc).lower():
            raise
        raise GptkitError(
            f"a model of {cfg.n_layers:,} layers, {cfg.emb_dim:,} wide"
            f" ({cfg.num_parameters():,} parameters) is too large to exist"
        ) from None


def check_state_dict(cfg: GPTConfig, state: dict[str, torch.Tensor]) -> None:
    """Every expected tensor present with the expected shape, nothing extra."""
    reference = cfg.without_tied(meta_model(cfg).state_dict())
    state = cfg.without_tied(state)
    missing = sorted(set(reference) - set(state))
    if missing:
        raise GptkitError(f"weights lack tensor {missing[0]} ({len(missing)} missing)")
    unexpected = sorted(set(state) - set(reference))
    if unexpected:
        raise GptkitError(f"weights have unexpected tensor {unexpected[0]}")
    for key, ref in reference.items():
        if tuple(state[key].shape) != tuple(ref.shape):
            raise GptkitError(
                f"tensor {key} has shape {tuple(state[key].shape)}, expected"
                f" {tuple(ref.shape)} for this config"
            )


def build_model(
    cfg: GPTConfig,
    state: dict[str, torch.Tensor] | None = None,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
    consume: bool = False,
) -> GPTModel:
    """A model with ``state`` loaded, without a second copy of the weights:
    modules are created on the meta device and the tensors assigned.

    Floating-point tensors are cast to ``dtype`` (``None``: keep theirs) and
    moved to ``device`` one at a time. With ``consume=True`` each tensor is
    removed from ``state`` as it is converted, so a cast or a move frees the
    original as it goes (peak memory: one copy plus one tensor).
    """
    if state is None:
        return GPTModel(cfg).to(device=device, dtype=dtype)
    check_state_dict(cfg, state)
    source = state if consume else dict(state)
    converted: dict[str, torch.Tensor] = {}
    for key in list(source):
        tensor = source.pop(key)
        if key in cfg.tied_keys():
            continue
        cast = dtype if tensor.is_floating_point() else None
        converted[key] = tensor.to(device=device, dtype=cast)
        del tensor
    model = meta_model(cfg)
    model.load_state_dict(converted, strict=False, assign=True)
    model.tie_weights()
    return model
