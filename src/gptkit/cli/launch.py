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
from pathlib import Path
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


#: Set for the workers of :func:`exec_torchrun`: the directory where each
#: writes its last line (``rank-N``) instead of printing it.
RANK_MESSAGES = "GPTKIT_RANK_MESSAGES"


def exec_torchrun(argv: list[str]) -> None:
    """Run torchrun's agent (``argv``: :func:`torchrun_argv`) in this process
    and end with one line for the whole run: each worker writes its last line
    (an error, an interruption) to a file rather than the terminal, and the
    agent's own logs and tracebacks (a worker killed, a signal to the agent)
    are replaced by the most telling of those lines, said once however many
    processes said it. Exits with the run's status (0, 2, or 128 + signal)."""
    import logging
    import shutil
    import tempfile

    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    sys.stdout.flush()
    sys.stderr.flush()
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("torch.distributed"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    messages = Path(tempfile.mkdtemp(prefix="gptkit-ranks-"))
    os.environ[RANK_MESSAGES] = str(messages)
    start = argv.index("torch.distributed.run") + 1
    failures: dict[int, Any] = {}
    signum = None
    try:
        torchrun.run(torchrun.parse_args(argv[start:]))
    except ChildFailedError as exc:
        failures = dict(exc.failures)
    except SignalException as exc:
        signum = int(exc.sigval)
    finally:
        lines = _rank_lines(messages)
        shutil.rmtree(messages, ignore_errors=True)
    if signum is None and not failures:
        raise SystemExit(0)
    code, line = run_outcome(lines, failures, signum)
    click.echo(line, err=True)
    raise SystemExit(code)


def _rank_lines(directory: Path) -> dict[int, tuple[str, str]]:
    """rank -> (kind, line) from the workers' files (kind: ``error``,
    ``peer`` for a worker that saw another die, ``stop`` for an interruption)."""
    out = {}
    for path in directory.glob("rank-*"):
        try:
            kind, _, line = path.read_text(encoding="utf-8").partition("\t")
            out[int(path.name.removeprefix("rank-"))] = (kind, line.strip())
        except (OSError, ValueError):
            continue
    return out


def run_outcome(
    lines: dict[int, tuple[str, str]], failures: dict[int, Any], signum: int | None
) -> tuple[int, str]:
    """(exit status, the one line) of a multi-process run that did not end
    well: a worker's own error first (the lowest rank's), then a worker killed
    by a signal, then an interruption, then what a survivor saw."""
    import signal

    def first(kind: str) -> str | None:
        found = [line for _, (k, line) in sorted(lines.items()) if k == kind]
        return found[0] if found else None

    error = first("error")
    if error is not None:
        return 2, error
    # The first failure is the cause; the agent then stops the others with
    # SIGTERM (within the same second: those come last).
    order = sorted(
        failures.items(),
        key=lambda item: (
            item[1].exitcode == -signal.SIGTERM,
            item[1].timestamp,
            item[0],
        ),
    )
    killed = [(rank, f.exitcode) for rank, f in order if f.exitcode < 0]
    if killed and signum is None:
        rank, code = killed[0]
        name = signal.Signals(-code).name
        return 2, (
            f"gptkit: error: training process {rank} was killed by {name}; the"
            " other processes were stopped (gptkit train --resume RUN_DIR continues"
            " from the last checkpoint)"
        )
    stopped = first("stop")
    if signum is not None:
        name = signal.Signals(signum).name
        return 128 + signum, stopped or f"gptkit: stopped by {name}"
    if stopped is not None:
        return 128 + signal.SIGTERM, stopped
    peer = first("peer")
    if peer is not None:
        return 2, peer
    rank, failure = order[0]
    return 2, f"gptkit: error: training process {rank} failed (exit {failure.exitcode})"


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
