"""Run ``gptkit ARGS...`` in this process, pausing inside checkpoint ``step-N``.

Usage: ``python tests/pause_at_checkpoint.py N ARGS...``. The pause comes after
the weights of ``step-N`` are written into the checkpoint's temporary directory
and before its trainer state is, so that a test can SIGKILL a writer in the
middle of a checkpoint. The hook lives here, on the test side: it wraps
``gptkit.core.checkpoints.native.fsync_file``, which the writer calls once per file.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from gptkit.cli.main import cli
from gptkit.core.checkpoints import native as checkpoint


def main() -> None:
    pause_at = f"step-{int(sys.argv[1]):06d}-"
    original = checkpoint.fsync_file

    def fsync_then_pause(path: Path) -> None:
        original(path)
        if path.name == checkpoint.WEIGHTS and pause_at in path.parent.name:
            time.sleep(600)

    checkpoint.fsync_file = fsync_then_pause
    cli.main(sys.argv[2:], prog_name="gptkit")


if __name__ == "__main__":
    main()
