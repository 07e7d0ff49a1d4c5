"""Run ``gptkit ARGS...`` with two test samplers registered as a plugin.

Usage: ``python tests/serve_with_faults.py serve ...``. The samplers exist only
on the test side, registered through the public plugin contract:

- ``slow``: greedy, but each draw sleeps ``delay`` seconds (a long generation
  without a large model: timeouts, queue limits, disconnects, draining);
- ``explode``: greedy until its ``after``-th draw, which raises (a failure
  inside generation).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

import torch

from gptkit import hookimpl
from gptkit.cli.main import cli
from gptkit.core import registry
from gptkit.core.interfaces import Sampler


class Slow(Sampler):
    name = "slow"
    summary = "Greedy, slowly."

    @dataclass(frozen=True)
    class Options:
        delay: float = field(default=0.05, metadata={"help": "seconds per token"})

    def sample(
        self, logits: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        time.sleep(self.options.delay)
        return logits.argmax(dim=-1)


class Explode(Sampler):
    name = "explode"
    summary = "Greedy, then a failure."

    @dataclass(frozen=True)
    class Options:
        after: int = field(default=3, metadata={"help": "draws before failing"})

    def start(self, batch_size: int) -> None:
        self.draws = 0

    def sample(
        self, logits: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        self.draws += 1
        if self.draws > self.options.after:
            raise RuntimeError("the explode sampler failed on purpose")
        return logits.argmax(dim=-1)


class FaultPlugin:
    @hookimpl
    def register_samplers(self) -> list[type]:
        return [Slow, Explode]


def main() -> None:
    reg = registry.build_registry(extra_plugins={"serve-faults": FaultPlugin()})
    registry.report_errors(reg)
    registry.get_registry = lambda: reg  # type: ignore[assignment]
    cli.main(sys.argv[1:], prog_name="gptkit")


if __name__ == "__main__":
    main()
