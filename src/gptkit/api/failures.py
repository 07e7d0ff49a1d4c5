"""One line for a failure no guard named: an ``OSError`` that reached the top, or
running out of memory. Shared by the command line and the server."""

from __future__ import annotations

import os
import re


def describe_unexpected_os_error(exc: OSError) -> str:
    """One line for an ``OSError`` that reached the top."""
    from gptkit.system.storage import describe_os_error

    if exc.filename:
        name = os.fsdecode(exc.filename)
        return f"{name}: {describe_os_error(exc, name, 'access')}"
    return describe_os_error(exc, ".", "access")


def out_of_memory_message(exc: BaseException) -> str | None:
    """One line for running out of memory (``MemoryError``, torch's
    ``OutOfMemoryError`` or an allocator's ``RuntimeError``); None for any
    other error."""
    from gptkit.runs.guard import out_of_memory

    if not out_of_memory(exc):
        return None
    first = (str(exc).strip().splitlines() or [""])[0]
    first = re.sub(r"^\[enforce fail at [^\]]*\]\s*\.?\s*", "", first)
    detail = f" ({first[:200]})" if first else ""
    return (
        f"out of memory{detail}; lower the batch size, context length, number"
        " of beams or prompts, or the model's size"
    )


def peer_failure_message(exc: BaseException) -> str | None:
    """One line for a collective that failed because another process of a
    multi-process run died (gloo's "Connection closed by peer"); None for
    anything else."""
    import sys

    if "torch.distributed" not in sys.modules:
        return None
    import torch.distributed as dist

    from gptkit.core.distributed import context_from_env
    from gptkit.errors import GptkitError

    # A run that torchrun started with several processes: by the time the
    # error reaches the top, the run's cleanup has usually left the group.
    try:
        several = context_from_env().enabled
    except GptkitError:  # a malformed environment: not a run of several
        several = False
    if not (several or (dist.is_available() and dist.is_initialized())):
        return None
    backend_error = getattr(dist, "DistBackendError", ())
    text = str(exc)
    peerish = ("Connection closed by peer", "Connection reset by peer", "Broken pipe")
    if not (isinstance(exc, backend_error) or any(p in text for p in peerish)):
        return None
    first = (text.strip().splitlines() or [""])[0][:200]
    return (
        f"another process of this run stopped ({first}); gptkit train --resume"
        " RUN_DIR continues from the last checkpoint"
    )
