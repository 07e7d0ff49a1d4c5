"""The native checkpoint format and atomic writes.

A checkpoint is a directory ``step-NNNNNN/`` holding ``model.safetensors`` (the
weights; a tied output head is stored once), ``config.json`` (model config,
gptkit version, step) and ``trainer_state.pt`` (optimizer and loop state, read
back with ``torch.load(weights_only=True)``, which cannot run code). A checkpoint
is written into a temporary sibling directory, each file fsynced, then renamed
into place: a crash or a full disk leaves the previous checkpoint intact, and
:func:`recover_incomplete` tidies what a killed writer left behind.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from gptkit._version import __version__
from gptkit.core.checkpoints.layout import (
    CONFIG,
    FORMAT,
    TRAINER_STATE,
    WEIGHTS,
    is_sharded_checkpoint,
    latest_checkpoint,
    prune_checkpoints,
    read_config,
)
from gptkit.core.checkpoints.sharded import load_consolidated
from gptkit.core.config import GPTConfig
from gptkit.errors import GptkitError
from gptkit.system.storage import (
    StorageError,
    default_file_mode,
    describe_os_error,
    ensure_dir,
    find_os_error,
    fsync_dir,
    fsync_file,
    guarded,
    write_json_atomic,
    write_stream,
)


def model_tensors(model: torch.nn.Module, cfg: GPTConfig) -> dict[str, torch.Tensor]:
    """The state dict to store: parameters only, a tied head stored once."""
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    return cfg.without_tied(state)


def save_checkpoint(
    checkpoints_dir: Path,
    step: int,
    model: torch.nn.Module,
    cfg: GPTConfig,
    trainer_state: dict[str, Any] | None = None,
    info: dict[str, Any] | None = None,
    keep_last: int | None = None,
) -> Path:
    """Write ``checkpoints_dir/step-{step:06d}`` atomically; return its path.

    A failure (a full disk, a read-only file system) removes the temporary
    directory, leaves every earlier checkpoint as it was and raises a
    :class:`StorageError` naming the checkpoint, the cause and the newest
    intact checkpoint."""
    final = checkpoints_dir / f"step-{step:06d}"
    tmp = checkpoints_dir / f".tmp-step-{step:06d}-{os.getpid()}"
    try:
        ensure_dir(checkpoints_dir)
        with guarded(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            tensors = model_tensors(model, cfg)
            save_file(tensors, tmp / WEIGHTS, metadata={"format": "pt"})
            del tensors
            os.chmod(tmp / WEIGHTS, default_file_mode())  # safetensors: private
            fsync_file(tmp / WEIGHTS)
            if trainer_state is not None:
                write_stream(  # fsynced
                    tmp / TRAINER_STATE, lambda f: torch.save(trainer_state, f)
                )
            meta = {
                "format": FORMAT,
                "gptkit_version": __version__,
                "step": step,
                "model": cfg.to_dict(),
                **(info or {}),
            }
            write_json_atomic(tmp / CONFIG, meta)
            fsync_dir(tmp)
            if final.exists():
                old = checkpoints_dir / f".old-step-{step:06d}-{os.getpid()}"
                os.replace(final, old)
                os.replace(tmp, final)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, final)
            fsync_dir(checkpoints_dir)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        found = find_os_error(exc)
        if found is None:
            raise
        raise _checkpoint_error(found, final) from None
    if keep_last is not None:
        prune_checkpoints(checkpoints_dir, keep_last)
    return final


def _checkpoint_error(exc: OSError, final: Path) -> StorageError:
    """The one line for a checkpoint that could not be written."""
    cause = describe_os_error(exc, exc.filename or final)
    previous = latest_checkpoint(final.parent)
    kept = (
        f"; the previous checkpoint {previous.name} is intact"
        if previous is not None and previous != final
        else "; no earlier checkpoint exists"
    )
    return StorageError(
        f"cannot write checkpoint {final}: {cause}{kept}", exc.errno, str(final)
    )


def load_checkpoint(ckpt_dir: Path) -> tuple[GPTConfig, dict[str, torch.Tensor], dict]:
    """Config, weights (CPU) and the config.json metadata of a checkpoint
    (a sharded one's weights consolidated from its shards)."""
    meta = read_config(ckpt_dir)
    cfg = GPTConfig.from_dict(meta["model"])
    if is_sharded_checkpoint(ckpt_dir):
        return cfg, load_consolidated(ckpt_dir, cfg), meta
    try:
        state = load_file(ckpt_dir / WEIGHTS, device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise GptkitError(
            f"corrupt checkpoint weights {ckpt_dir / WEIGHTS}: {exc}"
        ) from None
    return cfg, state, meta


#: The first PyTorch whose ``torch.load(weights_only=True)`` cannot be made to
#: run code (CVE-2025-32434 affects every earlier version).
SAFE_TORCH_LOAD = (2, 6)


def require_safe_torch_load(version: str | None = None) -> None:
    """Refuse to unpickle anything with a PyTorch older than 2.6, whose
    ``weights_only=True`` a crafted file can bypass (CVE-2025-32434)."""
    version = version or torch.__version__
    numbers = tuple(int(n) for n in re.findall(r"\d+", version)[:2])
    if numbers < SAFE_TORCH_LOAD:
        raise GptkitError(
            f"torch {version} cannot load pickled files safely (its"
            " weights_only=True can be bypassed: CVE-2025-32434); upgrade to"
            " torch 2.6 or newer"
        )


def load_trainer_state(ckpt_dir: Path) -> dict[str, Any]:
    """The trainer state (optimizer, step, RNG), loaded without running code."""
    path = ckpt_dir / TRAINER_STATE
    if not path.is_file():
        raise GptkitError(
            f"checkpoint {ckpt_dir} has no {TRAINER_STATE}; cannot resume"
        )
    require_safe_torch_load()
    try:
        with guarded(path, "read"):
            return torch.load(path, map_location="cpu", weights_only=True)
    except GptkitError:
        raise
    except Exception as exc:  # pickle errors come in many types
        raise GptkitError(f"corrupt or unsafe {path}: {type(exc).__name__}") from None
