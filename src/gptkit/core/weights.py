"""Weight specs -> loader plugins -> a ready model.

A spec names its loader by prefix (``hf:gpt2``, ``book:model.pth``); a bare path
goes to the first loader whose ``accepts`` says yes, else to ``native`` (gptkit
run and checkpoint directories).
"""

from __future__ import annotations

import torch

from gptkit.core.config import GPTConfig
from gptkit.core.errors import GptkitError
from gptkit.core.interfaces import LoadedWeights
from gptkit.core.model import GPTModel


def split_spec(spec: str) -> tuple[str, str]:
    """``"hf:gpt2"`` -> ``("hf", "gpt2")``; a bare path -> its loader's name."""
    from gptkit.core.registry import get_registry

    loaders = get_registry().loaders
    prefix, sep, rest = spec.partition(":")
    if sep and prefix in loaders:
        return prefix, rest
    for name in loaders.names():
        if name != "native" and loaders.get(name).accepts(spec):
            return name, spec
    return "native", spec


def load_weights(spec: str) -> LoadedWeights:
    """Read the weights a spec names (CPU tensors, in the file's dtype)."""
    from gptkit.core.registry import get_registry

    name, location = split_spec(spec)
    loader = get_registry().loaders.create(name)
    return loader.load(location)


def check_state_dict(cfg: GPTConfig, state: dict[str, torch.Tensor]) -> None:
    """Every expected tensor present with the expected shape, nothing extra."""
    with torch.device("meta"):
        reference = GPTModel(cfg).state_dict()
    if cfg.tie_embeddings:
        reference.pop("out_head.weight")
        state = {k: v for k, v in state.items() if k != "out_head.weight"}
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
) -> GPTModel:
    """A model with ``state`` loaded, without a second copy of the weights:
    modules are created on the meta device and the tensors assigned."""
    if state is None:
        model = GPTModel(cfg)
    else:
        check_state_dict(cfg, state)
        with torch.device("meta"):
            model = GPTModel(cfg)
        model.load_state_dict(state, strict=False, assign=True)
        if cfg.tie_embeddings:
            model.out_head.weight = model.tok_emb.weight
    return model.to(device=device, dtype=dtype)


def model_from_spec(
    spec: str, *, device: torch.device | str = "cpu", dtype: torch.dtype | None = None
) -> tuple[GPTModel, LoadedWeights]:
    loaded = load_weights(spec)
    model = build_model(loaded.config, loaded.state_dict, device=device, dtype=dtype)
    return model, loaded
