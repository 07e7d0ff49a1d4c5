"""``gptkit train``: the command line of :func:`gptkit.train` / :func:`gptkit.resume`.

The options are the fields of :class:`~gptkit.core.settings.TrainSettings`; the
run itself is composed by :mod:`gptkit.runs.compose`. Under ``torchrun`` (or
``--devices N``, which re-executes the command under torchrun) every process
runs this command; rank 0 logs and writes the run directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from gptkit.api.settings import TrainSettings
from gptkit.cli.flags import echo_json, given_settings, settings_options
from gptkit.cli.launch import RENDEZVOUS, launch, launcher_options, wants_launch


def make_train_command(
    settings_class: type[TrainSettings] = TrainSettings,
) -> click.Command:
    """The ``train`` command for ``settings_class``: its options are the fields
    of the settings (a subclass with one more field has one more option)."""

    @click.command("train")
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
        from gptkit.api import training

        given = given_settings(ctx, opts, settings_class)
        _check_launcher(opts)
        resume: Path | None = opts["resume"]
        if resume is not None and "out" in given:
            raise click.UsageError("--resume continues a run in place; drop --out")
        settings = training.settings_for(
            given, resume=resume, settings_class=settings_class
        )
        if wants_launch(opts):
            training.check_before_launch(
                settings, resume=resume is not None, devices=opts["devices"]
            )
            extra = []
            if resume is None and settings.out is None:
                # the same directory for every process
                extra = ["--out", str(training.new_run_dir())]
            launch("train", opts, extra)
            return
        summary, run_dir = training.run(
            settings, resume=resume is not None, quiet=opts["json_"]
        )
        if opts["json_"] and training.is_main_process():
            echo_json({"run_dir": str(run_dir), **summary})

    return train


train = make_train_command()


def _check_launcher(opts: dict[str, Any]) -> None:
    """Launcher options that cannot go together: one clear error first."""
    from gptkit.api.training import launched_by_torchrun

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
