"""A training run, composed: settings -> corpus, model, weights, scheduler,
loggers and resume state -> a :class:`~gptkit.core.training.trainer.Trainer`
writing a run directory. No click and no flag names here: the command line and
the Python API (:func:`gptkit.train`) both call :func:`run_training`.

A run directory::

    config.json      the settings as given ("settings", what --resume restores)
                     and as resolved (model, data, optimizer, scheduler, ...)
    metrics.jsonl    step and evaluation rows (the jsonl logger)
    samples.jsonl    the per-epoch samples
    plots/           loss.png, perplexity.png, lr.png (the plot logger)
    checkpoints/     step-NNNNNN/ (core.checkpoint)

Under torchrun every process runs :func:`run_training`; rank 0 alone logs and
writes the directory.
"""

from __future__ import annotations

import datetime as _dt
import json
import signal
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gptkit._version import __version__
from gptkit.core.settings import TrainSettings
from gptkit.errors import (
    GptkitError,
    Interrupted,
    SettingError,
)
from gptkit.formats.runfiles import RunFilesWriter
from gptkit.runs.files import CONFIG, read_run_config
from gptkit.runs.guard import (
    check_training_memory,
    first_line,
    hold_run_dir,
    out_of_memory,
    warn,
    where_resume_starts,
)
from gptkit.runs.resume import restore

if TYPE_CHECKING:
    import torch

    from gptkit.core.config import GPTConfig
    from gptkit.core.distributed import DistContext
    from gptkit.core.interfaces import Logger, Scheduler
    from gptkit.core.training.trainer import Trainer


def default_run_dir() -> Path:
    """``runs/<timestamp>`` in the working directory."""
    return Path("runs") / _dt.datetime.now().strftime("%Y%m%d-%H%M%S")


def check_new_run_dir(path: Path) -> None:
    """A new run never writes into an existing, non-empty directory (its own
    lock file aside)."""
    from gptkit.system.lock import run_dir_is_empty
    from gptkit.system.storage import guarded

    with guarded(path, "use"):
        if path.exists() and not path.is_dir():
            raise SettingError(f"{{out}} {path} exists and is not a directory")
        if not run_dir_is_empty(path):
            raise SettingError(
                f"{path} already exists and is not empty; choose another {{out}}"
                " or continue it with resume"
            )


@dataclass
class Components:
    """The plugins a run uses, resolved before anything touches the disk."""

    scheduler: Scheduler
    loggers: list[Logger]
    logger_names: list[str]


def resolve_components(
    settings: TrainSettings, *, hide_loggers: tuple[str, ...] = ()
) -> Components:
    """The scheduler and loggers the settings name (a typo fails fast)."""
    from gptkit.core.registry import get_registry

    registry = get_registry()
    scheduler = registry.schedulers.create(
        settings.scheduler, settings.scheduler_options
    )
    names = [n for n in dict.fromkeys(settings.loggers) if n not in hide_loggers]
    loggers = [registry.loggers.create(name) for name in names]
    if RunFilesWriter.name not in names:
        # metrics.jsonl and samples.jsonl are the run's record (Run.metrics,
        # resume, plots read them): written whatever loggers are chosen.
        loggers.insert(0, RunFilesWriter())
    return Components(scheduler, loggers, names)


def fit_context(state: dict[str, Any], cfg: GPTConfig) -> dict[str, Any]:
    """Crop the position embedding when training with a shorter context."""
    pos = state.get("pos_emb.weight")
    if pos is not None and pos.shape[0] > cfg.context_length:
        state = {**state, "pos_emb.weight": pos[: cfg.context_length].clone()}
    return state


def run_training(
    settings: TrainSettings,
    *,
    resume: bool = False,
    hide_loggers: tuple[str, ...] = (),
) -> tuple[dict[str, Any], Path]:
    """Train as the settings say (a new run in ``settings.out``, or continue
    the run there when ``resume``); return the summary and the run directory.

    Joins the process group when torchrun started this process.
    """
    from gptkit.core.distributed import (
        broadcast_object,
        init_distributed,
        shutdown,
    )

    settings.validate()
    dist, device = init_distributed(settings.device)
    trainer: Trainer | None = None
    clean = False
    try:
        # Every process must use rank 0's directory (the default name is a time).
        run_dir = Path(broadcast_object(str(settings.out or default_run_dir()), dist))
        settings = replace(settings, out=str(run_dir))
        with hold_run_dir(run_dir, dist, resume=resume) as took_over:
            trainer = build_trainer(
                settings,
                resume=resume,
                dist=dist,
                device=device,
                hide_loggers=hide_loggers,
            )
            if took_over:
                warn(took_over)
            try:
                summary = trainer.fit()
                clean = True
                return summary, run_dir
            except KeyboardInterrupt:
                raise Interrupted(
                    f"stopped at once at step {trainer.step}, without saving;"
                    f" {where_resume_starts(trainer, run_dir)}",
                    signal.SIGINT,
                ) from None
            except GptkitError:
                raise
            except (MemoryError, RuntimeError) as exc:
                if not out_of_memory(exc):
                    raise
                raise SettingError(
                    f"out of memory at step {trainer.step}"
                    f" ({first_line(exc)}); lower {{batch_size}} or"
                    f" {{context_length}}; {where_resume_starts(trainer, run_dir)}"
                ) from None
    finally:
        if trainer is not None:
            trainer.close()  # nothing may hold the process group past here
        trainer = None
        shutdown(clean=clean)


def build_trainer(
    settings: TrainSettings,
    *,
    resume: bool,
    dist: DistContext,
    device: torch.device,
    hide_loggers: tuple[str, ...] = (),
) -> Trainer:
    """Everything a run needs, in the book's order (data, then the seed, then
    the model), restored from the run's newest checkpoint when ``resume``."""
    import torch

    from gptkit.core.config import get_preset
    from gptkit.core.distributed import barrier, broadcast_object
    from gptkit.core.training.trainer import Trainer
    from gptkit.core.weights import build_model, load_weights
    from gptkit.system.storage import write_json_atomic

    # Resolve every plugin before touching the disk: a typo fails fast.
    parts = resolve_components(settings, hide_loggers=hide_loggers)
    # Every process must use rank 0's directory (the default name is a time).
    run_dir = Path(broadcast_object(str(settings.out or default_run_dir()), dist))
    if resume:
        read_run_config(run_dir)
    else:
        check_new_run_dir(run_dir)

    loaded = None
    if settings.weights:
        loaded = load_weights(settings.weights, settings.weight_hints())
        cfg = loaded.config.replace(
            drop_rate=settings.drop_rate, context_length=settings.context_length
        )
        if cfg.context_length > loaded.config.context_length:
            raise SettingError(
                f"{{context_length}} {cfg.context_length} exceeds the weights'"
                f" context length {loaded.config.context_length}"
            )
        preset = settings.weights
    else:
        cfg = get_preset(settings.preset_name()).replace(**settings.model_overrides())
        preset = settings.preset_name()
    check_training_memory(settings, cfg, device, dist, weights_loaded=bool(loaded))
    data, corpus_names, corpus_prompt = _load_data(settings, cfg, dist)

    torch.manual_seed(settings.seed)  # the book seeds right before building the model
    state = fit_context(loaded.state_dict, cfg) if loaded is not None else None
    model = build_model(cfg, state, device=device, dtype=torch.float32)
    if dist.rank:  # the same initial weights everywhere, other dropout masks
        torch.manual_seed(settings.seed + dist.rank)

    saved = settings.to_dict(saved_only=True)
    # The order used, so that a resume with another number of processes keeps it.
    saved["data_order"] = data_order(settings, dist)
    if loaded is not None:
        # Record the heads used (a book .pth file does not), so resume rebuilds
        # the same model.
        saved["n_heads"] = loaded.config.n_heads
    run_config = {
        "gptkit_version": __version__,
        "preset": preset,
        "model": cfg.to_dict(),
        "data": {
            "corpus": corpus_names,
            "prepared": settings.data is not None,
            "characters": data.characters,
            "tokens": data.total_tokens,
            "context_length": cfg.context_length,
            "stride": settings.stride or cfg.context_length,
            "batch_size": settings.batch_size,
            "processes": dist.world_size,
            "global_batch_size": settings.batch_size
            * dist.world_size
            * settings.grad_accum,
            "train_ratio": None if settings.data else settings.split_ratio(),
            "train_tokens_per_epoch": data.train_tokens,
            "val_tokens": data.val_tokens,
        },
        "optimizer": {
            "name": "AdamW",
            "lr": settings.lr,
            "weight_decay": settings.weight_decay,
            "max_norm": settings.max_norm,
            "grad_accum": settings.grad_accum,
        },
        "scheduler": {
            "name": settings.scheduler,
            "options": json.loads(json.dumps(vars(parts.scheduler.options))),
        },
        "precision": settings.precision,
        "compile": settings.compile,
        "loggers": parts.logger_names,
        "seed": settings.seed,
        "device": str(device),
        "epochs": settings.epochs,
        "settings": saved,
    }
    effective = settings
    if settings.start_context is None:
        effective = replace(settings, start_context=corpus_prompt)
    trainer = Trainer(
        model,
        data,
        effective,
        device=device,
        scheduler=parts.scheduler,
        loggers=parts.loggers if dist.is_main else [],
        run_dir=run_dir,
        run_config=run_config,
        dist=dist,
    )
    run_config["steps_per_epoch"] = trainer.steps_per_epoch
    run_config["total_steps"] = trainer.total_steps
    if resume:
        restore(trainer, run_dir, cfg, dist)
    else:
        barrier()  # every process has checked the directory before rank 0 fills it
        if dist.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            write_json_atomic(run_dir / CONFIG, run_config)
    return trainer


def _load_data(
    settings: TrainSettings, cfg: GPTConfig, dist: DistContext
) -> tuple[Any, list[str], str]:
    """The data splits, the corpus names and the corpus's sample prompt."""
    from gptkit.core.data import load_corpora, make_loaders, make_prepared_loaders
    from gptkit.core.interfaces import Corpus

    shard = {"rank": dist.rank, "world_size": dist.world_size}
    if settings.data is not None:
        data = make_prepared_loaders(
            Path(settings.data),
            context_length=cfg.context_length,
            batch_size=settings.batch_size,
            stride=settings.stride,
            seed=settings.seed,
            **shard,
        )
        return data, [str(settings.data)], Corpus.sample_prompt
    text, prompt = load_corpora(settings.corpus_names())
    order = data_order(settings, dist)
    data = make_loaders(
        text,
        context_length=cfg.context_length,
        batch_size=settings.batch_size,
        stride=settings.stride,
        train_ratio=settings.split_ratio(),
        seed=settings.seed,
        order=order,
        **shard,
    )
    return data, list(settings.corpus_names()), prompt


def data_order(settings: TrainSettings, dist: DistContext) -> str | None:
    """The data order a run uses: the setting, else the book's for one process
    reading a corpus and the seeded one otherwise (None: a prepared corpus,
    always seeded)."""
    if settings.data is not None:
        return None
    return settings.data_order or ("book" if dist.world_size == 1 else "seeded")
