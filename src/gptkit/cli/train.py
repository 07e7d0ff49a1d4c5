"""``gptkit train``: pretrain (or continue) a model on a corpus."""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any

import click

from gptkit.cli.options import (
    MODEL_FIELDS,
    corpus_option,
    data_options,
    device_option,
    echo_json,
    model_config,
    model_options,
    parse_option_pairs,
)
from gptkit.core.errors import GptkitError

DEFAULT_LOGGERS = ("console", "jsonl", "plot")
# Settings restored by --resume; passing a different value is refused.
RESUMED = (
    "corpora",
    "preset",
    *MODEL_FIELDS,
    "batch_size",
    "stride",
    "train_ratio",
    "epochs",
    "lr",
    "weight_decay",
    "eval_freq",
    "eval_iter",
    "seed",
    "scheduler",
    "scheduler_options",
    "max_norm",
    "grad_accum",
    "max_steps",
    "start_context",
    "max_new_tokens",
    "weights",
)


@click.command()
@corpus_option("python-docs")
@model_options("mini")
@data_options(batch_size=8)
@click.option(
    "--weights",
    metavar="SPEC",
    help="Start from these weights instead of a random init (hf:gpt2, RUN_DIR, ...).",
)
@click.option("--epochs", type=click.IntRange(min=1), default=4, show_default=True)
@click.option(
    "--lr",
    type=float,
    default=1e-3,
    show_default=True,
    help="Peak learning rate of AdamW.",
)
@click.option("--weight-decay", type=float, default=0.1, show_default=True)
@click.option(
    "--eval-freq",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help="Evaluate every N optimizer steps.",
)
@click.option(
    "--eval-iter",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="Batches per evaluation.",
)
@click.option("--seed", type=int, default=123, show_default=True)
@click.option(
    "--start-context",
    help="Prompt of the sample printed after each epoch ('' for none)"
    " [default: the corpus's, 'Every effort moves you' for the-verdict].",
)
@click.option(
    "--max-new-tokens",
    type=click.IntRange(min=0),
    default=50,
    show_default=True,
    help="Tokens in each epoch's sample.",
)
@click.option(
    "--scheduler",
    default="constant",
    show_default=True,
    help="Learning-rate scheduler plugin (constant, warmup-cosine, ...).",
)
@click.option(
    "-s",
    "--scheduler-option",
    "scheduler_options",
    multiple=True,
    metavar="KEY=VALUE",
    help="Scheduler option, repeatable (-s warmup=0.2).",
)
@click.option(
    "--max-norm",
    type=click.FloatRange(min=0, min_open=True),
    help="Clip the gradient norm to this value.",
)
@click.option(
    "--grad-accum",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Batches per optimizer step.",
)
@click.option("--max-steps", type=click.IntRange(min=1), help="Stop after N steps.")
@click.option(
    "--logger",
    "loggers",
    multiple=True,
    default=DEFAULT_LOGGERS,
    show_default=True,
    help="Logger plugin, repeatable.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Run directory [default: runs/<timestamp>].",
)
@click.option(
    "--resume",
    type=click.Path(file_okay=False, path_type=Path),
    help="Continue the run in this directory from its newest checkpoint.",
)
@click.option(
    "--checkpoint-every",
    type=click.IntRange(min=1),
    help="Also save a checkpoint every N steps.",
)
@click.option(
    "--keep-last",
    type=click.IntRange(min=1),
    help="Keep only the newest N checkpoints.",
)
@device_option
@click.option("--json", "json_", is_flag=True, help="Print the final summary as JSON.")
@click.pass_context
def train(ctx: click.Context, **opts: Any) -> None:
    """Pretrain (or continue) a GPT on a corpus; writes a run directory.

    With no options it trains the `mini` preset on Python's own documentation
    (no download) for a few minutes on a CPU, printing the loss and a sample
    after each epoch.

    \b
    Examples:
      gptkit train
      gptkit train --corpus the-verdict --preset gpt2-124m --context-length 256 \\
          --epochs 10 --batch-size 2 --lr 4e-4 --weight-decay 0.1 \\
          --eval-freq 5 --eval-iter 5 --seed 123          # the book's chapter 5
      gptkit train --corpus notes/ --scheduler warmup-cosine -s warmup=0.2 \\
          -s initial_lr=1e-5 -s min_lr=1e-5 --max-norm 1.0    # appendix D
      gptkit train --resume runs/20261128-101500
    """
    if opts["resume"] is not None:
        if opts["out"] is not None:
            raise GptkitError("--resume continues a run in place; drop --out")
        opts = _resumed_options(ctx, opts)
    run(opts)


def _resumed_options(ctx: click.Context, opts: dict[str, Any]) -> dict[str, Any]:
    run_dir: Path = opts["resume"]
    path = run_dir / "config.json"
    if not path.is_file():
        raise GptkitError(f"{run_dir} is not a gptkit run directory (no config.json)")
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))["cli"]
    except (ValueError, KeyError, TypeError):
        raise GptkitError(f"{path} is not a gptkit run config") from None
    for name in RESUMED:
        source = ctx.get_parameter_source(name)
        if source == click.core.ParameterSource.COMMANDLINE:
            given, before = opts[name], saved.get(name)
            if isinstance(given, tuple):
                given = list(given)
            if given != before:
                flag = "--" + name.replace("_", "-")
                raise GptkitError(
                    f"{flag} {given} differs from the run's {before}; a resumed run"
                    " keeps its settings"
                )
    merged = {**opts, **{k: saved[k] for k in RESUMED if k in saved}}
    merged["out"] = run_dir
    return merged


def run(opts: dict[str, Any]) -> dict[str, Any]:
    """Build everything from the command's options and train."""
    import torch

    from gptkit.core.checkpoint import (
        latest_checkpoint,
        load_checkpoint,
        load_trainer_state,
        write_json_atomic,
    )
    from gptkit.core.data import load_corpora, make_loaders
    from gptkit.core.device import resolve_device
    from gptkit.core.registry import get_registry
    from gptkit.core.train import Trainer, TrainSettings
    from gptkit.core.weights import build_model, load_weights

    registry = get_registry()
    resume: Path | None = opts["resume"]
    settings = TrainSettings(
        epochs=opts["epochs"],
        lr=opts["lr"],
        weight_decay=opts["weight_decay"],
        eval_freq=opts["eval_freq"],
        eval_iter=opts["eval_iter"],
        start_context=opts["start_context"],
        sample_tokens=opts["max_new_tokens"],
        max_norm=opts["max_norm"],
        grad_accum=opts["grad_accum"],
        max_steps=opts["max_steps"],
        checkpoint_every=opts["checkpoint_every"],
        keep_last=opts["keep_last"],
    )
    settings.validate()
    # Resolve every plugin before touching the disk: a typo fails fast.
    scheduler = registry.schedulers.create(
        opts["scheduler"], parse_option_pairs(tuple(opts["scheduler_options"]))
    )
    logger_names = [
        n for n in opts["loggers"] if not (opts["json_"] and n == "console")
    ]
    loggers = [registry.loggers.create(name) for name in dict.fromkeys(logger_names)]
    device = resolve_device(opts["device"])

    run_dir: Path = opts["out"] or Path("runs") / _dt.datetime.now().strftime(
        "%Y%m%d-%H%M%S"
    )
    if resume is None and run_dir.exists() and any(run_dir.iterdir()):
        raise GptkitError(
            f"{run_dir} already exists and is not empty; choose another --out or"
            " continue it with --resume"
        )

    loaded = load_weights(opts["weights"]) if opts["weights"] else None
    if loaded is not None:
        cfg = loaded.config.replace(
            drop_rate=opts["drop_rate"],
            context_length=opts["context_length"],
        )
        preset = opts["weights"]
    else:
        cfg = model_config(opts["preset"], opts)
        preset = opts["preset"]
    text, corpus_prompt = load_corpora(opts["corpora"])
    if settings.start_context is None:
        settings.start_context = corpus_prompt
    data = make_loaders(
        text,
        context_length=cfg.context_length,
        batch_size=opts["batch_size"],
        stride=opts["stride"],
        train_ratio=opts["train_ratio"],
        seed=opts["seed"],
    )

    torch.manual_seed(opts["seed"])  # the book seeds right before building the model
    state = None
    if loaded is not None:
        state = _fit_context(loaded.state_dict, cfg)
    model = build_model(cfg, state, device=device, dtype=torch.float32)

    cli_settings = {
        k: (list(v) if isinstance(v, tuple) else v)
        for k, v in opts.items()
        if k in RESUMED
    }
    run_config = {
        "gptkit_version": _version(),
        "preset": preset,
        "model": cfg.to_dict(),
        "data": {
            "corpus": list(opts["corpora"]),
            "characters": data.characters,
            "tokens": data.total_tokens,
            "context_length": cfg.context_length,
            "stride": opts["stride"] or cfg.context_length,
            "batch_size": opts["batch_size"],
            "train_ratio": opts["train_ratio"],
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
            "name": opts["scheduler"],
            "options": _jsonable(vars(scheduler.options)),
        },
        "loggers": logger_names,
        "seed": opts["seed"],
        "device": str(device),
        "epochs": settings.epochs,
        "cli": cli_settings,
    }
    trainer = Trainer(
        model,
        data,
        settings,
        device=device,
        scheduler=scheduler,
        loggers=loggers,
        run_dir=run_dir,
        run_config=run_config,
    )
    if resume is not None:
        ckpt = latest_checkpoint(run_dir / "checkpoints")
        if ckpt is None:
            raise GptkitError(f"{run_dir} has no checkpoint to resume from")
        saved_cfg, saved_state, _ = load_checkpoint(ckpt)
        if saved_cfg != cfg:
            raise GptkitError(
                f"the model config of {ckpt} differs from the run's config"
            )
        trainer_state = load_trainer_state(ckpt)
        model.load_state_dict(saved_state, strict=not cfg.tie_embeddings)
        trainer.load_state_dict(trainer_state)
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(run_dir / "config.json", run_config)
    summary = trainer.fit()
    if opts["json_"]:
        echo_json({"run_dir": str(run_dir), **summary})
    return summary


def _fit_context(state: dict[str, Any], cfg: Any) -> dict[str, Any]:
    """Crop the position embedding when training with a shorter context."""
    pos = state.get("pos_emb.weight")
    if pos is not None and pos.shape[0] > cfg.context_length:
        state = {**state, "pos_emb.weight": pos[: cfg.context_length].clone()}
    return state


def _jsonable(data: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}


def _version() -> str:
    from gptkit import __version__

    return __version__
