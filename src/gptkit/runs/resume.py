"""Continuing a run: the settings it keeps (what may change on resume) and the
newest intact checkpoint it restarts from (damaged newer ones set aside)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gptkit.core.settings import TrainSettings, merge_for_resume
from gptkit.errors import CheckpointDamaged, GptkitError
from gptkit.runs.files import saved_settings
from gptkit.runs.guard import warn

if TYPE_CHECKING:
    from gptkit.core.config import GPTConfig
    from gptkit.core.training.trainer import Trainer


def resumed_settings(
    run_dir: Path,
    given: Mapping[str, Any],
    settings_class: type[TrainSettings] = TrainSettings,
) -> TrainSettings:
    """The run's saved settings, with the adjustable ones given now."""
    merged = merge_for_resume(settings_class, saved_settings(run_dir), given)
    return replace(merged, out=str(run_dir))


@dataclass
class ResumePoint:
    """Where a run continues: the newest checkpoint that loads whole (None: the
    run stopped before its first one, so it starts again at step 0) and the
    newer ones that did not load, with why."""

    checkpoint: Path | None
    config: GPTConfig | None = None
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


def restore(trainer: Trainer, run_dir: Path, cfg: GPTConfig, dist: Any) -> None:
    """Load the newest intact checkpoint of ``run_dir`` into the model and
    trainer; every check happens before anything in the directory changes.

    A damaged newer checkpoint (truncated, corrupt) is set aside as
    ``damaged-step-N`` and the run continues from the older intact one; a run
    that stopped before its first checkpoint starts again at step 0 (its
    settings and initial weights are the ones it started with). Both are said.
    """
    from gptkit.core.checkpoints.layout import (
        list_checkpoints,
        read_config,
        recover_incomplete,
        set_aside,
    )
    from gptkit.core.config import GPTConfig

    checkpoints = run_dir / "checkpoints"
    point = ResumePoint(None)
    for ckpt in reversed(list_checkpoints(checkpoints)):
        try:
            saved_cfg = GPTConfig.from_dict(read_config(ckpt)["model"])
        except GptkitError as exc:
            point.damaged.append((ckpt, str(exc)))
            continue
        except (KeyError, TypeError, ValueError) as exc:
            point.damaged.append((ckpt, f"corrupt {ckpt / 'config.json'}: {exc}"))
            continue
        if saved_cfg != cfg:
            saved, now = saved_cfg.to_dict(), cfg.to_dict()
            name = next(k for k in now if saved.get(k) != now[k])
            raise GptkitError(
                f"checkpoint {ckpt} has model setting {name}={saved.get(name)!r},"
                f" but the run's config.json says {name}={now[name]!r}"
            )
        try:
            trainer.restore(ckpt)  # native or sharded, any number of processes
        except CheckpointDamaged as exc:
            point.damaged.append((ckpt, str(exc)))
            continue
        point.checkpoint, point.config = ckpt, saved_cfg
        break
    if point.checkpoint is None and trainer.partially_restored:
        # A damaged checkpoint got half-way into the model: step 0 would not
        # start from the run's initial weights.
        raise GptkitError(
            f"no intact checkpoint in {checkpoints} ("
            + "; ".join(f"{path.name}: {why}" for path, why in point.damaged)
            + "); start the run again with a new out directory"
        )
    if not dist.is_main:
        return
    for line in recover_incomplete(checkpoints):
        trainer.tell(line)
    for damaged, _ in point.damaged:
        set_aside(damaged)
    for line in point.describe():
        warn(line)
