"""The one place the server gets its model from."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gptkit.core.model import GPTModel


def load_model(
    weights: str | None,
    *,
    preset: str | None = None,
    seed: int = 0,
    device: str = "auto",
    dtype: str = "fp32",
    hints: dict[str, Any] | None = None,
) -> tuple[GPTModel, str]:
    """(model in eval mode, the name clients use for it).

    ``weights``: any weight spec (``hf:gpt2``, a run directory, ...). Without
    it, a freshly initialised ``preset`` from ``seed`` (benchmarks, tests).
    """
    import torch

    from gptkit.core.config import get_preset
    from gptkit.core.device import resolve_device, resolve_dtype
    from gptkit.core.weights import build_model, model_from_spec

    target = resolve_device(device)
    torch_dtype = resolve_dtype(dtype)
    if weights is not None:
        model, _ = model_from_spec(
            weights, device=target, dtype=torch_dtype, hints=hints or {}
        )
        return model.eval(), default_name(weights)
    if preset is None:
        from gptkit.core.errors import GptkitError

        raise GptkitError("give --weights SPEC (or --preset NAME for random weights)")
    cfg = get_preset(preset).replace(**(hints or {}))
    torch.manual_seed(seed)
    return build_model(cfg, device=target, dtype=torch_dtype).eval(), preset


def default_name(spec: str) -> str:
    """``hf:gpt2`` -> ``gpt2``; ``runs/NAME`` -> ``NAME``; a file -> its stem."""
    prefix, sep, rest = spec.partition(":")
    location = rest if sep and len(prefix) > 1 else spec
    location = location.split("@")[0].rstrip("/")
    path = Path(location)
    if path.name.startswith("step-") and path.parent.name == "checkpoints":
        return f"{path.parent.parent.name}/{path.name}"
    if path.suffix in (".pth", ".pt", ".safetensors"):
        return path.stem
    return location if "/" in location and not path.exists() else path.name
