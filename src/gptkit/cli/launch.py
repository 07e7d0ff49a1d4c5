"""``gptkit train --devices N``: re-execute the command under torchrun.

torchrun starts N worker processes that each run the same ``gptkit train``
command (without the launcher's options); every worker then joins the process
group (:func:`gptkit.core.distributed.init_distributed`). One node without a
rendezvous endpoint runs ``--standalone`` (torchrun picks a free port);
otherwise ``--nnodes``, ``--node-rank`` and the ``--rdzv-*`` options are passed
through unchanged (see ``torchrun --help``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

#: The launcher's options (removed from the command the workers run); values:
#: whether the option takes a value.
LAUNCHER_OPTIONS = {
    "--devices": True,
    "--nnodes": True,
    "--node-rank": True,
    "--rdzv-backend": True,
    "--rdzv-endpoint": True,
    "--rdzv-id": True,
}
#: The launcher's parameter names, other than ``devices``.
RENDEZVOUS = ("nnodes", "node_rank", "rdzv_backend", "rdzv_endpoint", "rdzv_id")


def launcher_options(f: F) -> F:
    """``--devices`` and torchrun's multi-node options."""
    options = [
        click.option(
            "--devices",
            type=click.IntRange(min=1),
            help="Train with N processes on this node (DDP): re-runs the command"
            " under torchrun. --batch-size is per process.",
        ),
        click.option(
            "--nnodes",
            metavar="N|MIN:MAX",
            help="With --devices: number of nodes (passed to torchrun).",
        ),
        click.option(
            "--node-rank",
            type=click.IntRange(min=0),
            help="With --devices: this node's rank (passed to torchrun).",
        ),
        click.option("--rdzv-backend", help="With --devices: torchrun's rendezvous."),
        click.option(
            "--rdzv-endpoint",
            metavar="HOST:PORT",
            help="With --devices: rendezvous address.",
        ),
        click.option("--rdzv-id", help="With --devices: the job id shared by nodes."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def wants_launch(opts: dict[str, Any]) -> bool:
    """Whether the options ask for several processes."""
    devices = opts.get("devices")
    return devices is not None and (devices > 1 or opts["nnodes"] not in (None, "1"))


def strip_launcher_options(argv: Sequence[str]) -> list[str]:
    """``argv`` without the launcher's options (``--devices 2``,
    ``--nnodes=2``, ...), which the workers must not see."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        name, eq, _ = arg.partition("=")
        if name in LAUNCHER_OPTIONS:
            skip = LAUNCHER_OPTIONS[name] and not eq
            continue
        out.append(arg)
    return out


def torchrun_argv(
    command: Sequence[str],
    *,
    nproc_per_node: int,
    nnodes: str | None = None,
    node_rank: int | None = None,
    rdzv_backend: str | None = None,
    rdzv_endpoint: str | None = None,
    rdzv_id: str | None = None,
    python: str = sys.executable,
) -> list[str]:
    """``python -m torch.distributed.run [launcher flags] -m gptkit COMMAND...``."""
    args = [python, "-m", "torch.distributed.run", f"--nproc-per-node={nproc_per_node}"]
    multi_node = nnodes not in (None, "1") or rdzv_endpoint is not None
    if not multi_node:
        args.append("--standalone")
    else:
        if nnodes is not None:
            args.append(f"--nnodes={nnodes}")
        if node_rank is not None:
            args.append(f"--node-rank={node_rank}")
        if rdzv_backend is not None:
            args.append(f"--rdzv-backend={rdzv_backend}")
        if rdzv_endpoint is not None:
            args.append(f"--rdzv-endpoint={rdzv_endpoint}")
        if rdzv_id is not None:
            args.append(f"--rdzv-id={rdzv_id}")
    return [*args, "-m", "gptkit", *command]


def exec_torchrun(argv: list[str]) -> None:
    """Replace this process with torchrun (signals and the exit status are
    then torchrun's own); on systems without ``execv`` run it as a child."""
    sys.stdout.flush()
    sys.stderr.flush()
    if hasattr(os, "execv") and sys.platform != "win32":
        os.execv(argv[0], argv)
    import subprocess

    raise SystemExit(subprocess.call(argv))


def launch(command: str, opts: dict[str, Any], extra: Sequence[str] = ()) -> None:
    """Re-execute ``gptkit COMMAND ...`` (this process's own arguments, without
    the launcher's options, plus ``extra``) under torchrun."""
    argv = sys.argv[1:]
    if command not in argv:
        raise click.UsageError(
            f"--devices works from the command line (gptkit {command} ...)"
        )
    worker = strip_launcher_options(argv[argv.index(command) :]) + list(extra)
    if "OMP_NUM_THREADS" not in os.environ:  # else torchrun sets 1 per process
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
        os.environ["OMP_NUM_THREADS"] = str(max(1, cpus // opts["devices"]))
    exec_torchrun(
        torchrun_argv(
            worker,
            nproc_per_node=opts["devices"],
            **{name: opts[name] for name in RENDEZVOUS},
        )
    )
