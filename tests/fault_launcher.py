"""Run ``gptkit ARGS...`` in this process with a fault or a pause injected at a
checkpoint (test-side hooks: gptkit itself has none).

Usage: ``python tests/fault_launcher.py HOOK -- ARGS...`` where HOOK is

- ``none``: no fault (the same process start-up as the faulty runs);
- ``wait:N:PATH``: before writing checkpoint ``step-N``, wait until the file
  PATH exists (the run holds its directory meanwhile);
- ``fsize:N:BYTES``: from checkpoint ``step-N`` on, no file may grow past BYTES
  (``RLIMIT_FSIZE``): every write beyond fails in the kernel, inside whichever
  writer makes it (safetensors, torch.save, Python) — a disk that is full from
  then on, for machines where a small real file system cannot be mounted.

The hooks wrap ``gptkit.core.checkpoints.native.save_checkpoint`` as the trainer calls
it.
"""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path
from typing import Any

from gptkit.cli.main import cli
from gptkit.core.checkpoints import native as checkpoint
from gptkit.core.training import checkpointing as train_checkpoint


def install(hook: str) -> None:
    kind, _, rest = hook.partition(":")
    if kind == "none":
        return
    step_text, _, arg = rest.partition(":")
    at = int(step_text)
    original = checkpoint.save_checkpoint

    def save(checkpoints_dir: Path, step: int, *args: Any, **kwargs: Any) -> Path:
        if step == at:
            if kind == "wait":
                while not Path(arg).exists():
                    time.sleep(0.05)
            elif kind == "fsize":
                limit = int(arg)
                resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
            else:
                raise SystemExit(f"unknown hook {hook!r}")
        return original(checkpoints_dir, step, *args, **kwargs)

    checkpoint.save_checkpoint = save
    train_checkpoint.save_checkpoint = save  # the trainer's own reference


def main() -> None:
    hook, separator, *args = sys.argv[1:]
    assert separator == "--", "usage: fault_launcher.py HOOK -- ARGS..."
    install(hook)
    cli.main(args, prog_name="gptkit")


if __name__ == "__main__":
    main()
