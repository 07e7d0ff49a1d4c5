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

import json
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from gptkit._version import __version__
from gptkit.core.config import GPTConfig
from gptkit.core.errors import GptkitError
from gptkit.core.storage import (
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

FORMAT = "gptkit"
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
TRAINER_STATE = "trainer_state.pt"
_STEP_DIR = re.compile(r"^step-(\d+)$")
_PARTIAL_DIR = re.compile(r"^\.(tmp|old)-step-(\d+)-\d+$")


def model_tensors(model: torch.nn.Module, cfg: GPTConfig) -> dict[str, torch.Tensor]:
    """The state dict to store: parameters only, a tied head stored once."""
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    return cfg.without_tied(state)


#: safetensors metadata key holding the model config the tensors were saved
#: with: config.json can be edited, the tensors' header is checked against it.
MODEL_METADATA = "gptkit_model"
#: Model settings a checkpoint may change after saving (training-only).
_FREE = ("drop_rate",)


def weights_metadata(cfg: GPTConfig) -> dict[str, str]:
    """The safetensors metadata of a checkpoint's weights."""
    return {"format": "pt", MODEL_METADATA: json.dumps(cfg.to_dict(), sort_keys=True)}


def check_saved_config(path: Path, cfg: GPTConfig) -> None:
    """Refuse a ``config.json`` whose model differs from the one recorded in
    its weights file (an edited ``n_heads`` loads the same tensor shapes into
    another computation). Weights without the record are accepted."""
    from safetensors import safe_open

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
            save_file(tensors, tmp / WEIGHTS, metadata=weights_metadata(cfg))
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
    (:mod:`gptkit.core.sharded_checkpoint`)."""
    from gptkit.core.sharded_checkpoint import is_sharded_checkpoint

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


def load_checkpoint(ckpt_dir: Path) -> tuple[GPTConfig, dict[str, torch.Tensor], dict]:
    """Config, weights (CPU) and the config.json metadata of a checkpoint
    (a sharded one's weights consolidated from its shards)."""
    from gptkit.core.sharded_checkpoint import is_sharded_checkpoint, load_consolidated

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
    check_saved_config(ckpt_dir / WEIGHTS, cfg)
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


@dataclass
class ResumePoint:
    """Where a run continues: the newest checkpoint that loads whole (None: the
    run stopped before its first one, so it starts again at step 0) and the
    newer ones that did not load, with why."""

    checkpoint: Path | None
    config: GPTConfig | None = None
    weights: dict[str, torch.Tensor] = field(default_factory=dict)
    trainer_state: dict[str, Any] = field(default_factory=dict)
    damaged: list[tuple[Path, str]] = field(default_factory=list)

    def describe(self) -> list[str]:
        """What resuming from here means, one line each, for the user."""
        lines = [
            f"checkpoint {path.name} is damaged ({why})" for path, why in self.damaged
        ]
        if self.checkpoint is not None:
            if self.damaged:
                lines.append(f"resuming from the older {self.checkpoint.name}")
        elif self.damaged:
            lines.append("no intact checkpoint is left; starting again at step 0")
        else:
            lines.append(
                "the run stopped before its first checkpoint; starting again at step 0"
            )
        return lines


def find_resume_point(
    checkpoints_dir: Path,
    check: Callable[[GPTConfig, dict[str, torch.Tensor]], None] | None = None,
) -> ResumePoint:
    """The newest checkpoint of a run whose config, weights (``check``ed) and
    trainer state all load; damaged newer ones are listed, not touched (see
    :func:`set_aside`)."""
    damaged: list[tuple[Path, str]] = []
    for ckpt in reversed(list_checkpoints(checkpoints_dir)):
        try:
            cfg, weights, _ = load_checkpoint(ckpt)
            if check is not None:
                check(cfg, weights)
            state = load_trainer_state(ckpt)
        except GptkitError as exc:
            damaged.append((ckpt, str(exc)))
            continue
        return ResumePoint(ckpt, cfg, weights, state, damaged)
    return ResumePoint(None, damaged=damaged)


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
