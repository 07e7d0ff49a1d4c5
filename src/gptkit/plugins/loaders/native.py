"""gptkit's own checkpoints: a run directory (its newest checkpoint) or a
``step-NNNNNN`` checkpoint directory. Tensors come back on the CPU in the dtype
they were saved in; the caller casts and moves them."""

from __future__ import annotations

import json
from pathlib import Path

from gptkit.core.checkpoints.layout import FORMAT, resolve_checkpoint_dir
from gptkit.core.checkpoints.native import load_checkpoint
from gptkit.core.interfaces import LoadedWeights, WeightLoader


class NativeLoader(WeightLoader):
    """Loads ``native:PATH`` or a bare PATH to a run or checkpoint directory."""

    name = "native"
    summary = "gptkit run or checkpoint directories (safetensors + config.json)."

    @classmethod
    def accepts(cls, location: str) -> bool:
        """A directory gptkit wrote: a run (``config.json`` with
        ``gptkit_version``, or ``checkpoints/``) or a checkpoint (``config.json``
        with ``"format": "gptkit"``)."""
        path = Path(location).expanduser()
        if not path.is_dir():
            return False
        if (path / "checkpoints").is_dir():
            return True
        try:
            config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return isinstance(config, dict) and (
            config.get("format") == FORMAT or "gptkit_version" in config
        )

    def load(self, location: str) -> LoadedWeights:
        ckpt = resolve_checkpoint_dir(Path(location).expanduser())
        cfg, state, meta = load_checkpoint(ckpt)
        return LoadedWeights(cfg, state, source=str(ckpt), extra={"checkpoint": meta})
