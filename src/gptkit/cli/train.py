"""``gptkit train``: pretrain (or continue) a model on a corpus.

Also the entry point of each process of a distributed run: under ``torchrun``
(or ``--devices N``, which re-executes the command under torchrun) every process
runs this command; rank 0 logs and writes the run directory.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from gptkit._version import __version__
from gptkit.cli.flags import (
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
    "data",
    "precision",
    "data_order",
)
# Settings a resumed run takes from the saved run unless given again (they do
# not change what is computed, or only how fast).
ADJUSTABLE = ("compile", "checkpoint_every", "keep_last", "loggers")
LAUNCHER = ("nnodes", "node_rank", "rdzv_backend", "rdzv_endpoint", "rdzv_id")


@click.command()
@corpus_option("python-docs")
@click.option(
    "--data",
    type=click.Path(file_okay=False, path_type=Path),
    help="A corpus made by `gptkit prepare` (streamed from disk) instead of --corpus.",
)
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
    "--data-order",
    type=click.Choice(["book", "seeded"]),
    help="book: the book's DataLoader shuffling with the global RNG (reproduces"
    " its numbers exactly); seeded: a permutation per epoch from --seed (any"
    " number of processes, prepared corpora) [default: book for one process and"
    " --corpus, else seeded].",
)
@click.option(
    "--precision",
    type=click.Choice(["fp32", "bf16-mixed", "fp16-mixed"]),
    default="fp32",
    show_default=True,
    help="fp32, or autocast to bf16/fp16 with fp32 weights (fp16 with a grad scaler).",
)
@click.option(
    "--compile",
    is_flag=True,
    help="Compile the model with torch.compile (slow start, faster steps).",
)
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
@click.option(
    "--devices",
    type=click.IntRange(min=1),
    help="Train with N processes on this node (DDP): re-runs the command under"
    " torchrun. --batch-size is per process.",
)
@click.option(
    "--nnodes",
    metavar="N|MIN:MAX",
    help="With --devices: number of nodes (passed to torchrun).",
)
@click.option(
    "--node-rank",
    type=click.IntRange(min=0),
    help="With --devices: this node's rank (passed to torchrun).",
)
@click.option("--rdzv-backend", help="With --devices: torchrun's rendezvous backend.")
@click.option(
    "--rdzv-endpoint", metavar="HOST:PORT", help="With --devices: rendezvous address."
)
@click.option("--rdzv-id", help="With --devices: the job id shared by all nodes.")
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
      gptkit train --devices 2 --precision bf16-mixed    # 2 processes (DDP)
      torchrun --nproc-per-node 8 -m gptkit train --data corpora/big --compile

    The global batch is --batch-size x processes x --grad-accum sequences.
    """
    _check_conflicts(ctx, opts)
    if opts["resume"] is not None:
        opts = _resumed_options(ctx, opts)
    if opts["devices"] is not None and (
        opts["devices"] > 1 or opts["nnodes"] not in (None, "1")
    ):
        _launch(opts)
    run(opts)


def _given(ctx: click.Context, name: str) -> bool:
    return ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE


def _check_conflicts(ctx: click.Context, opts: dict[str, Any]) -> None:
    """Options that cannot go together: one clear error before anything runs."""
    from gptkit.core.distributed import launched_by_torchrun

    if opts["resume"] is not None and opts["out"] is not None:
        raise GptkitError("--resume continues a run in place; drop --out")
    if opts["data"] is not None and _given(ctx, "corpora"):
        raise GptkitError("--data and --corpus both name the training text; give one")
    if opts["data"] is not None and _given(ctx, "train_ratio"):
        raise GptkitError(
            "--train-ratio is fixed when the corpus is prepared (gptkit prepare"
            " --train-ratio); drop it with --data"
        )
    launcher = [n for n in LAUNCHER if opts[n] is not None]
    if launcher and opts["devices"] is None:
        flag = "--" + launcher[0].replace("_", "-")
        raise GptkitError(f"{flag} goes with --devices N (processes per node)")
    if launched_by_torchrun() and (opts["devices"] is not None or launcher):
        raise GptkitError(
            "--devices starts torchrun, and this process already runs under it;"
            " drop --devices (and the rendezvous flags)"
        )
    if opts["devices"] and opts["devices"] > 1 and opts["device"] == "mps":
        raise GptkitError("--devices: Apple's MPS backend has a single device")


def _launch(opts: dict[str, Any]) -> None:
    """Re-execute this command under torchrun with ``--devices`` processes."""
    from gptkit.core.distributed import (
        exec_torchrun,
        strip_launcher_options,
        torchrun_argv,
    )

    argv = sys.argv[1:]
    if "train" not in argv:
        raise GptkitError("--devices works from the command line (gptkit train ...)")
    command = strip_launcher_options(argv[argv.index("train") :])
    _preflight(opts)
    if opts["resume"] is None and opts["out"] is None:
        command += ["--out", str(_default_run_dir())]  # the same for every process
    if "OMP_NUM_THREADS" not in os.environ:  # else torchrun sets 1 per process
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
        os.environ["OMP_NUM_THREADS"] = str(max(1, cpus // opts["devices"]))
    exec_torchrun(
        torchrun_argv(
            command,
            nproc_per_node=opts["devices"],
            nnodes=opts["nnodes"],
            node_rank=opts["node_rank"],
            rdzv_backend=opts["rdzv_backend"],
            rdzv_endpoint=opts["rdzv_endpoint"],
            rdzv_id=opts["rdzv_id"],
        )
    )


def _preflight(opts: dict[str, Any]) -> None:
    """The cheap checks of :func:`run`, before starting processes (whose own
    errors torchrun reports with a traceback)."""
    import torch

    _settings(opts).validate()
    _plugins(opts)
    out = opts["out"]
    if (
        opts["resume"] is None
        and out is not None
        and out.exists()
        and any(out.iterdir())
    ):
        raise GptkitError(
            f"{out} already exists and is not empty; choose another --out or"
            " continue it with --resume"
        )
    wants_cuda = opts["device"] == "cuda" or (
        opts["device"] == "auto" and torch.cuda.is_available()
    )
    if wants_cuda and opts["devices"] > torch.cuda.device_count():
        raise GptkitError(
            f"--devices {opts['devices']}: this node has"
            f" {torch.cuda.device_count()} GPU(s)"
        )


def _default_run_dir() -> Path:
    return Path("runs") / _dt.datetime.now().strftime("%Y%m%d-%H%M%S")


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
            given, before = _json_value(opts[name]), saved.get(name)
            if given != before:
                flag = "--" + name.replace("_", "-")
                raise GptkitError(
                    f"{flag} {given} differs from the run's {before}; a resumed run"
                    " keeps its settings"
                )
    merged = {**opts, **{k: saved[k] for k in RESUMED if k in saved}}
    for name in ADJUSTABLE:
        if name in saved and not _given(ctx, name):
            merged[name] = saved[name]
    merged["out"] = run_dir
    return merged


def _settings(opts: dict[str, Any]) -> Any:
    """The trainer's settings from the command's options."""
    from gptkit.core.train import TrainSettings

    return TrainSettings(
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
        precision=opts.get("precision") or "fp32",
        compile=bool(opts.get("compile")),
    )


def _plugins(opts: dict[str, Any]) -> tuple[Any, list[str], list[Any]]:
    """The scheduler, the logger names and the loggers (a typo fails fast)."""
    from gptkit.core.registry import get_registry

    registry = get_registry()
    scheduler = registry.schedulers.create(
        opts["scheduler"], parse_option_pairs(tuple(opts["scheduler_options"]))
    )
    logger_names = [
        n for n in opts["loggers"] if not (opts["json_"] and n == "console")
    ]
    loggers = [registry.loggers.create(name) for name in dict.fromkeys(logger_names)]
    return scheduler, logger_names, loggers


def run(opts: dict[str, Any]) -> dict[str, Any]:
    """Build everything from the command's options and train (as one process
    of a process group when torchrun started this one)."""
    from gptkit.core.distributed import init_distributed, shutdown

    opts = {"data": None, "precision": "fp32", "compile": False, **opts}
    dist, device = init_distributed(opts["device"])
    try:
        return _run(opts, dist, device)
    finally:
        shutdown()


def _run(opts: dict[str, Any], dist: Any, device: Any) -> dict[str, Any]:
    import torch

    from gptkit.cli.flags import weight_hints
    from gptkit.core.data import load_corpora, make_loaders, make_prepared_loaders
    from gptkit.core.distributed import barrier, broadcast_object
    from gptkit.core.interfaces import Corpus
    from gptkit.core.storage import write_json_atomic
    from gptkit.core.train import Trainer
    from gptkit.core.weights import build_model, load_weights

    resume: Path | None = opts["resume"]
    settings = _settings(opts)
    settings.validate()
    # Resolve every plugin before touching the disk: a typo fails fast.
    scheduler, logger_names, loggers = _plugins(opts)

    # Every process must use rank 0's directory (the default name is a time).
    run_dir = Path(broadcast_object(str(opts["out"] or _default_run_dir()), dist))
    if resume is None and run_dir.exists() and any(run_dir.iterdir()):
        raise GptkitError(
            f"{run_dir} already exists and is not empty; choose another --out or"
            " continue it with --resume"
        )

    loaded = (
        load_weights(opts["weights"], weight_hints(opts)) if opts["weights"] else None
    )
    if loaded is not None:
        # Record the heads used (a book .pth file does not), so --resume
        # rebuilds the same model.
        opts = {**opts, "n_heads": loaded.config.n_heads}
        cfg = loaded.config.replace(
            drop_rate=opts["drop_rate"],
            context_length=opts["context_length"],
        )
        preset = opts["weights"]
    else:
        cfg = model_config(opts["preset"], opts)
        preset = opts["preset"]
    shard = {"rank": dist.rank, "world_size": dist.world_size}
    if opts["data"] is not None:
        if opts["data_order"] == "book":
            raise GptkitError("--data-order book needs --corpus, not --data")
        data = make_prepared_loaders(
            Path(opts["data"]),
            context_length=cfg.context_length,
            batch_size=opts["batch_size"],
            stride=opts["stride"],
            seed=opts["seed"],
            **shard,
        )
        corpus_names, corpus_prompt = [str(opts["data"])], Corpus.sample_prompt
    else:
        text, corpus_prompt = load_corpora(opts["corpora"])
        corpus_names = list(opts["corpora"])
        data = make_loaders(
            text,
            context_length=cfg.context_length,
            batch_size=opts["batch_size"],
            stride=opts["stride"],
            train_ratio=opts["train_ratio"],
            seed=opts["seed"],
            order=opts["data_order"] or ("book" if dist.world_size == 1 else "seeded"),
            **shard,
        )
    if settings.start_context is None:
        settings.start_context = corpus_prompt

    torch.manual_seed(opts["seed"])  # the book seeds right before building the model
    state = None
    if loaded is not None:
        state = _fit_context(loaded.state_dict, cfg)
    model = build_model(cfg, state, device=device, dtype=torch.float32)
    if dist.rank:  # the same initial weights everywhere, other dropout masks
        torch.manual_seed(opts["seed"] + dist.rank)

    cli_settings = {
        k: _json_value(v) for k, v in opts.items() if k in RESUMED or k in ADJUSTABLE
    }
    run_config = {
        "gptkit_version": __version__,
        "preset": preset,
        "model": cfg.to_dict(),
        "data": {
            "corpus": corpus_names,
            "prepared": opts["data"] is not None,
            "characters": data.characters,
            "tokens": data.total_tokens,
            "context_length": cfg.context_length,
            "stride": opts["stride"] or cfg.context_length,
            "batch_size": opts["batch_size"],
            "processes": dist.world_size,
            "global_batch_size": opts["batch_size"]
            * dist.world_size
            * settings.grad_accum,
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
        "precision": settings.precision,
        "compile": settings.compile,
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
        loggers=loggers if dist.is_main else [],
        run_dir=run_dir,
        run_config=run_config,
        dist=dist,
    )
    if resume is not None:
        _restore(trainer, run_dir, cfg, dist)
    else:
        barrier()  # every process has checked the directory before rank 0 fills it
        if dist.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            write_json_atomic(run_dir / "config.json", run_config)
    summary = trainer.fit()
    if opts["json_"] and dist.is_main:
        echo_json({"run_dir": str(run_dir), **summary})
    return summary


def _restore(trainer: Any, run_dir: Path, cfg: Any, dist: Any) -> None:
    """Load the newest checkpoint of ``run_dir`` into the model and trainer;
    every check happens before anything in the directory changes."""
    from gptkit.core.checkpoint import (
        latest_checkpoint,
        list_checkpoints,
        load_checkpoint,
        load_trainer_state,
        recover_incomplete,
    )
    from gptkit.core.weights import check_state_dict

    checkpoints = run_dir / "checkpoints"
    ckpt = latest_checkpoint(checkpoints)
    if ckpt is None:
        raise GptkitError(f"{run_dir} has no checkpoint to resume from")
    try:
        saved_cfg, saved_state, _ = load_checkpoint(ckpt)
        check_state_dict(saved_cfg, saved_state)
        trainer_state = load_trainer_state(ckpt)
    except GptkitError as exc:
        older = list_checkpoints(checkpoints)[:-1]
        if not older:
            raise
        raise GptkitError(
            f"{exc} (the older {older[-1].name} may be intact: move {ckpt.name}"
            " aside to resume from it)"
        ) from None
    if saved_cfg != cfg:
        saved, now = saved_cfg.to_dict(), cfg.to_dict()
        name = next(k for k in now if saved.get(k) != now[k])
        raise GptkitError(
            f"checkpoint {ckpt} has model setting {name}={saved.get(name)!r},"
            f" but the run's config.json says {name}={now[name]!r}"
        )
    try:
        trainer.model.load_state_dict(saved_state, strict=not cfg.tie_embeddings)
        trainer.load_state_dict(trainer_state)
    except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as exc:
        raise GptkitError(
            f"corrupt trainer state in {ckpt}: {type(exc).__name__}: {exc}"
        ) from None
    if dist.is_main:
        for line in recover_incomplete(checkpoints):
            click.echo(f"gptkit: {line}", err=True)


def _json_value(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    return value


def _fit_context(state: dict[str, Any], cfg: Any) -> dict[str, Any]:
    """Crop the position embedding when training with a shorter context."""
    pos = state.get("pos_emb.weight")
    if pos is not None and pos.shape[0] > cfg.context_length:
        state = {**state, "pos_emb.weight": pos[: cfg.context_length].clone()}
    return state


def _jsonable(data: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}
