"""What a checkpoint directory holds and how checkpoints are found.

A run keeps its checkpoints in ``checkpoints/step-NNNNNN/``: ``config.json``,
the weights (``model.safetensors`` in the native format, a ``sharded/`` folder of
tensor shards in the sharded one) and ``trainer_state.pt``. This module knows the
names and the directory rules (complete, newest, unfinished writes, damaged
ones set aside); :mod:`~gptkit.core.checkpoints.native` and
:mod:`~gptkit.core.checkpoints.sharded` read and write the two formats.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

from gptkit.errors import GptkitError
from gptkit.system.storage import fsync_dir, guarded

FORMAT = "gptkit"
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
TRAINER_STATE = "trainer_state.pt"
_STEP_DIR = re.compile(r"^step-(\d+)$")
_PARTIAL_DIR = re.compile(r"^\.(tmp|old)-step-(\d+)-\d+$")
SHARDED = "sharded"
_METADATA = ".metadata"


def is_sharded_checkpoint(ckpt_dir: Path) -> bool:
    """Whether ``ckpt_dir`` holds a complete sharded checkpoint's tensors."""
    return (ckpt_dir / SHARDED / _METADATA).is_file()


def recover_incomplete(checkpoints_dir: Path) -> list[str]:
    """Tidy what a writer killed mid-save left: a temporary directory is
    deleted; a checkpoint moved aside to be replaced (``.old-step-N``) is moved
    back when its replacement never arrived. Returns what was done, one line
    each."""
    done: list[str] = []
    if not checkpoints_dir.is_dir():
        return done
    for path in sorted(checkpoints_dir.iterdir()):
        match = _PARTIAL_DIR.match(path.name)
        if not match:
            continue
        final = checkpoints_dir / f"step-{match.group(2)}"
        if match.group(1) == "old" and not final.exists():
            os.replace(path, final)
            done.append(f"restored {final.name} from an interrupted replacement")
        else:
            shutil.rmtree(path, ignore_errors=True)
            done.append(f"removed the unfinished checkpoint write {path.name}")
    if done:
        fsync_dir(checkpoints_dir)
    return done


def list_checkpoints(checkpoints_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    if not checkpoints_dir.is_dir():
        return []
    found = []
    for path in checkpoints_dir.iterdir():
        match = _STEP_DIR.match(path.name)
        if match and has_weights(path) and (path / CONFIG).is_file():
            found.append((int(match.group(1)), path))
    return [p for _, p in sorted(found)]


def has_weights(ckpt_dir: Path) -> bool:
    """A native checkpoint's weights file, or a sharded checkpoint's index
    (:mod:`gptkit.core.checkpoints.sharded`)."""
    return (ckpt_dir / WEIGHTS).is_file() or is_sharded_checkpoint(ckpt_dir)


def latest_checkpoint(checkpoints_dir: Path) -> Path | None:
    found = list_checkpoints(checkpoints_dir)
    return found[-1] if found else None


def prune_checkpoints(checkpoints_dir: Path, keep_last: int) -> None:
    """Delete all but the newest ``keep_last`` checkpoints."""
    for path in list_checkpoints(checkpoints_dir)[: -keep_last or None]:
        shutil.rmtree(path, ignore_errors=True)


def resolve_checkpoint_dir(path: Path) -> Path:
    """A checkpoint directory, or a run directory (its newest checkpoint)."""
    if has_weights(path):
        return path
    if path.is_dir():
        latest = latest_checkpoint(path / "checkpoints")
        if latest is not None:
            return latest
        raise GptkitError(f"{path} is neither a checkpoint nor a run with checkpoints")
    raise GptkitError(f"weights not found: {path}")


def read_config(ckpt_dir: Path) -> dict[str, Any]:
    path = ckpt_dir / CONFIG
    if not path.is_file():
        raise GptkitError(f"checkpoint {ckpt_dir} has no {CONFIG}")
    try:
        with guarded(path, "read"):
            text = path.read_text(encoding="utf-8")
        data = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GptkitError(f"corrupt {path}: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        raise GptkitError(f"{path} is not a gptkit checkpoint config")
    return data


def set_aside(ckpt_dir: Path) -> Path:
    """Rename a damaged checkpoint ``step-N`` to ``damaged-step-N`` (kept for a
    look, no longer loaded nor counted); returns the new path."""
    target = ckpt_dir.with_name(f"damaged-{ckpt_dir.name}")
    n = 1
    while target.exists():
        n += 1
        target = ckpt_dir.with_name(f"damaged-{ckpt_dir.name}.{n}")
    with guarded(ckpt_dir, "rename"):
        os.replace(ckpt_dir, target)
    fsync_dir(ckpt_dir.parent)
    return target
