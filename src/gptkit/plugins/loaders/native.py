"""gptkit's own checkpoints: a run directory (its newest checkpoint) or a
``step-NNNNNN`` checkpoint directory. Tensors come back on the CPU in the dtype
they were saved in; the caller casts and moves them."""

from __future__ import annotations

import json
from pathlib import Path

from gptkit.core.checkpoints.layout import (
    CONFIG,
    FORMAT,
    WEIGHTS,
    resolve_checkpoint_dir,
)
from gptkit.core.checkpoints.native import load_checkpoint
from gptkit.core.config import GPTConfig
from gptkit.core.interfaces import LoadedWeights, WeightLoader
from gptkit.errors import GptkitError


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
        check_saved_config(ckpt / WEIGHTS, cfg)
        check_quantization_record(meta, ckpt)
        if meta.get("adapter"):  # a LoRA run: its base, with the adapter merged
            from gptkit.formats.adapters import merged_state

            state = merged_state(cfg, state, meta["adapter"])
        return LoadedWeights(cfg, state, source=str(ckpt), extra={"checkpoint": meta})


#: safetensors metadata key of the model config the weights were saved with
#: (:func:`gptkit.core.checkpoints.native.weights_metadata`).
MODEL_METADATA = "gptkit_model"
#: Model settings a checkpoint may change after saving (training-only).
_FREE = ("drop_rate",)


def check_saved_config(path: Path, cfg: GPTConfig) -> None:
    """Refuse a ``config.json`` whose model differs from the one recorded in
    its weights file's header (an edited ``n_heads`` would load the same tensor
    shapes into another computation). Weights without the record (older
    checkpoints, sharded ones) are accepted."""
    from safetensors import safe_open

    if not path.is_file():
        return
    try:
        with safe_open(str(path), framework="pt") as f:
            recorded = (f.metadata() or {}).get(MODEL_METADATA)
    except Exception:  # the load itself reports damaged files
        return
    if recorded is None:
        return
    try:
        saved = json.loads(recorded)
    except ValueError:
        raise GptkitError(f"corrupt model record in {path}") from None
    current = cfg.to_dict()
    for key in sorted(set(saved) | set(current)):
        if key not in _FREE and saved.get(key) != current.get(key):
            raise GptkitError(
                f"{path.parent / CONFIG} says {key} {current.get(key)}, but its"
                f" weights were saved with {key} {saved.get(key)}; the config was"
                " changed after saving"
            )


def check_quantization_record(meta: dict, ckpt: Path) -> None:
    """A quantized checkpoint's record is ``{"method": NAME, "options":
    {...}}``; anything else (an edited config.json) is a one-line error."""
    if "quantization" not in meta:
        return
    record = meta["quantization"]
    if (
        not isinstance(record, dict)
        or not isinstance(record.get("method"), str)
        or not isinstance(record.get("options", {}), dict)
    ):
        raise GptkitError(
            f"{ckpt}: its 'quantization' record is damaged ({record!r:.80});"
            ' expected {"method": NAME, "options": {...}}'
        )
