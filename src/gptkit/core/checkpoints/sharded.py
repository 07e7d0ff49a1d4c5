"""Sharded checkpoints (``strategy="fsdp"``) through ``torch.distributed.checkpoint``.

A sharded checkpoint is a ``step-NNNNNN/`` directory like a native one, with the
weights and AdamW's state in ``sharded/`` instead of ``model.safetensors``:

    step-000090/
      config.json         model config, gptkit version, step, "sharded": true
      trainer_state.pt    loop position, RNG states of every process, grad scaler
      sharded/            torch.distributed.checkpoint: .metadata, __R_0.distcp

Every process writes its own shards, all at once (``__R_0.distcp``: rank R's
parameters and optimizer state); rank 0 writes the index (``.metadata``: which
byte ranges of which file hold which slice of which tensor). Tensors are keyed
by parameter name (``model.trf_blocks.0.att.W_query.weight``,
``optim.state.<name>.exp_avg``), not by process, so a checkpoint loads at any
number of processes: each reads the slices its shards cover (resharding), and
one process without a process group reads whole tensors
(:func:`load_consolidated`, what ``generate``/``eval``/``export`` use).

The write is atomic as a native checkpoint's (:mod:`gptkit.core.checkpoints.native`):
everything goes into a temporary sibling directory, every file is fsynced, and
rank 0 renames it into place once all processes have written.

``.metadata`` is a pickle; it is read here with an unpickler that accepts only
the checkpoint metadata's own classes (the ``.distcp`` files are read with
``torch.load(weights_only=True)`` by PyTorch), so a checkpoint cannot run code.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gptkit._version import __version__
from gptkit.core.checkpoints.layout import (
    _METADATA,
    CONFIG,
    FORMAT,
    SHARDED,
    TRAINER_STATE,
    latest_checkpoint,
    prune_checkpoints,
)
from gptkit.core.config import GPTConfig
from gptkit.core.distributed import DistContext, barrier, broadcast_object
from gptkit.errors import GptkitError
from gptkit.system.storage import fsync_dir, fsync_file, write_json_atomic


@contextlib.contextmanager
def _quiet_single_process(single: bool) -> Iterator[None]:
    """Silence the warning torch.distributed.checkpoint prints for every
    single-process save or load, which is what we asked for."""
    with warnings.catch_warnings():
        if single:
            warnings.filterwarnings(
                "ignore", message="torch.distributed is disabled", category=UserWarning
            )
        yield


# -- writing -------------------------------------------------------------------


def _training_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """Model and optimizer state keyed by parameter name (DTensor shards under
    FSDP, whole tensors in a single process)."""
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_state, optim_state = get_state_dict(model, optimizer)
    return {"model": model_state, "optim": optim_state}


def save_sharded_checkpoint(
    checkpoints_dir: Path,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    cfg: GPTConfig,
    *,
    trainer_state: dict[str, Any],
    dist: DistContext,
    info: dict[str, Any] | None = None,
    keep_last: int | None = None,
) -> Path:
    """Write ``checkpoints_dir/step-{step:06d}`` from every process (a
    collective: all must call it); returns its path on every process."""
    import torch.distributed.checkpoint as dcp

    final = checkpoints_dir / f"step-{step:06d}"
    tmp: str | None = None
    error: str | None = None
    if dist.is_main:
        try:
            checkpoints_dir.mkdir(parents=True, exist_ok=True)
            tmp_path = checkpoints_dir / f".tmp-step-{step:06d}-{os.getpid()}"
            shutil.rmtree(tmp_path, ignore_errors=True)
            (tmp_path / SHARDED).mkdir(parents=True)
            tmp = str(tmp_path)
        except OSError as exc:
            error = _failed(final, checkpoints_dir, exc)
    tmp, error = broadcast_object((tmp, error), dist)
    if error is not None:
        raise GptkitError(error)
    try:
        with _quiet_single_process(not dist.enabled):
            dcp.save(
                _training_state(model, optimizer),
                storage_writer=dcp.FileSystemWriter(
                    Path(tmp) / SHARDED, sync_files=True
                ),
                no_dist=not dist.enabled,
            )
    except (OSError, dcp.CheckpointException) as exc:
        # CheckpointException: some process failed; all of them raise it.
        if dist.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
        raise GptkitError(_failed(final, checkpoints_dir, exc)) from None
    barrier()
    if dist.is_main:
        try:
            _finish(Path(tmp), final, step, cfg, trainer_state, info or {})
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            error = _failed(final, checkpoints_dir, exc)
        if error is None and keep_last is not None:
            prune_checkpoints(checkpoints_dir, keep_last)
    error = broadcast_object(error, dist)
    if error is not None:
        raise GptkitError(error)
    return final


def _failed(final: Path, checkpoints_dir: Path, exc: BaseException) -> str:
    previous = latest_checkpoint(checkpoints_dir)
    kept = f"; {previous} is intact" if previous else ""
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
    return f"could not write checkpoint {final.name}: {reason}{kept}"


def _finish(
    tmp: Path,
    final: Path,
    step: int,
    cfg: GPTConfig,
    trainer_state: dict[str, Any],
    info: dict[str, Any],
) -> None:
    """Rank 0, once every shard is on disk: the trainer state and config, then
    the rename into place (replacing an existing ``final`` the way
    ``save_checkpoint`` does, so ``recover_incomplete`` tidies either)."""
    torch.save(trainer_state, tmp / TRAINER_STATE)
    fsync_file(tmp / TRAINER_STATE)
    meta = {
        "format": FORMAT,
        "gptkit_version": __version__,
        "step": step,
        "model": cfg.to_dict(),
        "sharded": True,
        "world_size": trainer_state.get("world_size", 1),
        **info,
    }
    write_json_atomic(tmp / CONFIG, meta)
    fsync_dir(tmp / SHARDED)
    fsync_dir(tmp)
    if final.exists():
        old = final.parent / f".old-step-{step:06d}-{os.getpid()}"
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    fsync_dir(final.parent)


# -- reading -------------------------------------------------------------------


#: What a ``.metadata`` pickle may reference: the metadata module's classes,
#: these names, and torch's dtypes.
_METADATA_MODULE = "torch.distributed.checkpoint.metadata"
_METADATA_NAMES = frozenset(
    {
        ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
        ("torch", "Size"),
        ("torch.serialization", "_get_layout"),
        ("collections", "OrderedDict"),
        ("pathlib", "PosixPath"),
        ("pathlib", "WindowsPath"),
        ("pathlib", "PurePosixPath"),
        ("pathlib", "PureWindowsPath"),
    }
)


class _MetadataUnpickler(pickle.Unpickler):
    """Unpickles only what a checkpoint's ``.metadata`` holds."""

    def find_class(self, module: str, name: str) -> Any:
        allowed = module == _METADATA_MODULE or (module, name) in _METADATA_NAMES
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            allowed = True
        if not allowed:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _reader(path: Path) -> Any:
    """A ``FileSystemReader`` whose metadata cannot run code."""
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.metadata import StorageMeta

    class SafeReader(FileSystemReader):
        def read_metadata(self, *args: Any, **kwargs: Any) -> Any:
            rank = kwargs.get("rank")
            name = _METADATA if rank is None else f"__{rank}{_METADATA}"
            with open(Path(self.path) / name, "rb") as f:
                metadata = _MetadataUnpickler(f).load()
            if getattr(metadata, "storage_meta", None) is None:
                metadata.storage_meta = StorageMeta()
            metadata.storage_meta.load_id = self.load_id
            return metadata

    return SafeReader(path)


def _corrupt(ckpt_dir: Path, exc: BaseException) -> GptkitError:
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return GptkitError(
        f"corrupt sharded checkpoint {ckpt_dir}: {type(exc).__name__}"
        + (f": {reason}" if reason else "")
    )


def load_training_state(
    ckpt_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer
) -> None:
    """Load the weights and AdamW state into ``model`` and ``optimizer`` as
    they are now (sharded over however many processes, or whole): each process
    reads the slices it holds. Every process must call it."""
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import set_state_dict

    state = _training_state(model, optimizer)
    single = not (dist.is_available() and dist.is_initialized())
    try:
        with _quiet_single_process(single):
            dcp.load(state, storage_reader=_reader(ckpt_dir / SHARDED), no_dist=single)
    except (OSError, pickle.UnpicklingError, RuntimeError, ValueError) as exc:
        raise _corrupt(ckpt_dir, exc) from None
    except dcp.CheckpointException as exc:
        raise _corrupt(ckpt_dir, exc) from None
    set_state_dict(
        model,
        optimizer,
        model_state_dict=state["model"],
        optim_state_dict=state["optim"],
    )


def load_consolidated(ckpt_dir: Path, cfg: GPTConfig) -> dict[str, torch.Tensor]:
    """The whole weights of a sharded checkpoint as CPU tensors (one process,
    no process group): every tensor is assembled from the shards of all the
    processes that wrote it. A tied output head is returned once (as the
    token embedding), like a native checkpoint's."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    reader = _reader(ckpt_dir / SHARDED)
    try:
        metadata = reader.read_metadata()
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError) as exc:
        raise _corrupt(ckpt_dir, exc) from None
    weights: dict[str, torch.Tensor] = {}
    tied = cfg.tied_keys()
    for key, item in metadata.state_dict_metadata.items():
        name = key.removeprefix("model.")
        if name == key or not isinstance(item, TensorStorageMetadata):
            continue
        if name in tied:
            continue
        weights[name] = torch.empty(item.size, dtype=item.properties.dtype)
    if not weights:
        raise GptkitError(f"sharded checkpoint {ckpt_dir} holds no model weights")
    try:
        with _quiet_single_process(True):
            dcp.load({"model": weights}, storage_reader=reader, no_dist=True)
    except (OSError, RuntimeError, ValueError, dcp.CheckpointException) as exc:
        raise _corrupt(ckpt_dir, exc) from None
    return weights
