"""gptkit's own checkpoints: a run directory (its newest checkpoint) or a
``step-NNNNNN`` checkpoint directory. Tensors come back on the CPU in the dtype
they were saved in; the caller casts and moves them."""

from __future__ import annotations

from pathlib import Path

from gptkit.core.checkpoint import load_checkpoint, resolve_checkpoint_dir
from gptkit.core.interfaces import LoadedWeights, WeightLoader


class NativeLoader(WeightLoader):
    """Loads ``native:PATH`` or a bare PATH to a run or checkpoint directory."""

    name = "native"
    summary = "gptkit run or checkpoint directories (safetensors + config.json)."

    @classmethod
    def accepts(cls, location: str) -> bool:
        return Path(location).is_dir()

    def load(self, location: str) -> LoadedWeights:
        ckpt = resolve_checkpoint_dir(Path(location).expanduser())
        cfg, state, meta = load_checkpoint(ckpt)
        return LoadedWeights(cfg, state, source=str(ckpt), extra={"checkpoint": meta})
