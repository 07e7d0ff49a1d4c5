"""Training as the command line runs it: settings from what was given (or a
run's saved ones on resume), the cheap checks done before starting processes,
and the run itself. :func:`gptkit.train` and :func:`gptkit.resume` (in
:mod:`gptkit.api.runs`) are the Python side of the same calls."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gptkit.core.settings import TrainSettings
from gptkit.errors import GptkitError


def settings_for(
    given: Mapping[str, Any],
    *,
    resume: Path | None = None,
    settings_class: type[TrainSettings] = TrainSettings,
) -> TrainSettings:
    """The settings of a new run, or of ``resume``'s run with the adjustable
    ones given now."""
    if resume is None:
        return settings_class.create(given)
    from gptkit.runs.resume import resumed_settings

    return resumed_settings(resume, given, settings_class)


def run(
    settings: TrainSettings, *, resume: bool = False, quiet: bool = False
) -> tuple[dict[str, Any], Path]:
    """Train (or continue) a run; returns its summary and directory. ``quiet``:
    no console logger (the summary is printed by the caller)."""
    from gptkit.runs.compose import run_training

    hide = ("console",) if quiet else ()
    return run_training(settings, resume=resume, hide_loggers=hide)


def new_run_dir() -> Path:
    """The directory a run without ``out`` gets (``runs/<timestamp>``)."""
    from gptkit.runs.compose import default_run_dir

    return default_run_dir()


def check_before_launch(settings: TrainSettings, *, resume: bool, devices: int) -> None:
    """The cheap checks of a run, before starting ``devices`` processes (whose
    own errors torchrun would report with a traceback)."""
    import torch

    from gptkit.runs.compose import check_new_run_dir, resolve_components

    resolve_components(settings)
    if not resume and settings.out is not None:
        check_new_run_dir(Path(settings.out))
    wants_cuda = settings.device == "cuda" or (
        settings.device == "auto" and torch.cuda.is_available()
    )
    if wants_cuda and devices > torch.cuda.device_count():
        raise GptkitError(
            f"--devices {devices}: this node has {torch.cuda.device_count()} GPU(s)"
        )


def is_main_process() -> bool:
    """Whether this process writes the run (rank 0, or not distributed)."""
    from gptkit.core.distributed import context_from_env

    return context_from_env().is_main


def launched_by_torchrun() -> bool:
    """Whether torchrun started this process."""
    from gptkit.core.distributed import launched_by_torchrun as under_torchrun

    return under_torchrun()
