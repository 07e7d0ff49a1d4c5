"""``gptkit train``: the command line of :func:`gptkit.train` / :func:`gptkit.resume`.

The options are the fields of :class:`~gptkit.core.settings.TrainSettings`; the
run itself is composed by :mod:`gptkit.core.runs`. Under ``torchrun`` (or
``--devices N``, which re-executes the command under torchrun) every process
runs this command; rank 0 logs and writes the run directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from gptkit.cli.flags import echo_json, given_settings, settings_options
from gptkit.cli.launch import RENDEZVOUS, launch, launcher_options, wants_launch
from gptkit.core.errors import GptkitError
from gptkit.core.settings import TrainSettings


def make_train_command(
    settings_class: type[TrainSettings] = TrainSettings,
    *,
    doc: str | None = None,
) -> click.Command:
    """The command of ``settings_class``'s job (``train``, ``finetune``): its
    options are the fields of the settings (a subclass with one more field has
    one more option); ``doc`` replaces the help text."""
    name = settings_class.job

    @click.command(name)
    @settings_options(settings_class)
    @click.option(
        "--resume",
        type=click.Path(file_okay=False, path_type=Path),
        help="Continue the run in this directory from its newest checkpoint"
        " (its settings are kept; the adjustable ones may be given again).",
    )
    @launcher_options
    @click.option(
        "--json", "json_", is_flag=True, help="Print the final summary as JSON."
    )
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
          gptkit train --devices 8 --strategy fsdp --precision bf16-true \\
              --preset gpt2-774m --activation-checkpointing   # sharded (FSDP)
          torchrun --nproc-per-node 8 -m gptkit train --data corpora/big --compile

        The global batch is --batch-size x processes x --grad-accum sequences.
        """
        from gptkit.core.runs import resumed_settings, run_training

        given = given_settings(ctx, opts, settings_class)
        _check_launcher(opts)
        resume: Path | None = opts["resume"]
        if resume is not None:
            if "out" in given:
                raise click.UsageError("--resume continues a run in place; drop --out")
            settings = resumed_settings(resume, given, settings_class)
        else:
            settings = settings_class.create(given)
        if wants_launch(opts):
            _preflight(settings, resume is not None, opts["devices"])
            extra = []
            if resume is None and settings.out is None:
                from gptkit.core.runs import default_run_dir

                extra = ["--out", str(default_run_dir())]  # the same for every process
            launch(name, opts, extra)
            return
        hide = ("console",) if opts["json_"] else ()
        summary, run_dir = run_training(
            settings, resume=resume is not None, hide_loggers=hide
        )
        if opts["json_"] and _is_main_process():
            echo_json({"run_dir": str(run_dir), **summary})
        elif summary.get("responses"):
            click.echo(f"test responses: {summary['responses']}")

    if doc is not None:
        train.help = doc
    return train


train = make_train_command()


def _is_main_process() -> bool:
    from gptkit.core.distributed import context_from_env

    return context_from_env().is_main


def _check_launcher(opts: dict[str, Any]) -> None:
    """Launcher options that cannot go together: one clear error first."""
    from gptkit.core.distributed import launched_by_torchrun

    rendezvous = [n for n in RENDEZVOUS if opts[n] is not None]
    if rendezvous and opts["devices"] is None:
        flag = "--" + rendezvous[0].replace("_", "-")
        raise click.UsageError(f"{flag} goes with --devices N (processes per node)")
    if launched_by_torchrun() and (opts["devices"] is not None or rendezvous):
        raise click.UsageError(
            "--devices starts torchrun, and this process already runs under it;"
            " drop --devices (and the rendezvous flags)"
        )
    if opts["devices"] and opts["devices"] > 1 and opts["device"] == "mps":
        raise click.UsageError("--devices: Apple's MPS backend has a single device")


def _preflight(settings: TrainSettings, resume: bool, devices: int) -> None:
    """The cheap checks of a run, before starting processes (whose own errors
    torchrun reports with a traceback)."""
    import torch

    from gptkit.core.runs import check_new_run_dir, resolve_components

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
