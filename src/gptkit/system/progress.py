"""Progress bars for long work (training steps, evaluation batches, generated
tokens): tqdm on stderr, shown when stderr is a terminal unless asked
otherwise, so logs and pipes stay clean (torch-free)."""

from __future__ import annotations

import os
import sys
from typing import Any

#: ``GPTKIT_PROGRESS=1`` shows progress bars even when stderr is not a
#: terminal, ``0`` hides them everywhere; unset: only on a terminal.
ENV = "GPTKIT_PROGRESS"


def progress_wanted(asked: bool | None = None) -> bool:
    """Whether to show progress: ``asked`` if given, else ``GPTKIT_PROGRESS``,
    else whether stderr is a terminal."""
    if asked is not None:
        return asked
    env = os.environ.get(ENV, "").strip().lower()
    if env in ("1", "true", "yes", "on"):
        return True
    if env in ("0", "false", "no", "off"):
        return False
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


def auto_tqdm() -> Any:
    """``tqdm.auto.tqdm``: a widget in Jupyter, text elsewhere. Without
    ipywidgets in Jupyter it is the text bar, without tqdm's warning about it
    (the warning would land in every notebook's output)."""
    import warnings

    from tqdm import TqdmWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TqdmWarning)
        from tqdm.auto import tqdm
    return tqdm


def progress_bar(
    total: int | None,
    *,
    desc: str | None = None,
    unit: str = "it",
    initial: int = 0,
    enabled: bool | None = None,
    leave: bool = False,
) -> Any:
    """A tqdm bar on stderr (disabled, but still callable, when progress is
    not wanted; see :func:`progress_wanted`)."""
    return auto_tqdm()(
        total=total,
        initial=initial,
        desc=desc,
        unit=unit,
        file=sys.stderr,
        dynamic_ncols=True,
        leave=leave,
        disable=not progress_wanted(enabled),
    )
