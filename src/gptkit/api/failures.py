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
