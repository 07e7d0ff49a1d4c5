"""The book's data order, reproduced exactly and resumably.

The book shuffles with ``DataLoader(shuffle=True)`` and no generator, so PyTorch
draws from the global RNG: one draw when an iterator is created (the workers'
base seed) and one when its ``RandomSampler`` starts (the seed of that pass's
permutation, ``randperm(n)``). The book's evaluation iterates the same shuffled
training loader and the validation loader, drawing again. Dropout draws in
between, so the order of epoch 2 depends on everything before it.

:class:`BookOrderSampler` makes the same draws in the same places, which gives
the book's exact batches (with gptkit's model, the book's printed losses), and
remembers the permutation seed of the running pass so a resumed run can replay
the rest of an epoch without drawing again.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import torch


class DataOrder:
    """How a training loader orders its windows, epoch after epoch, so that a
    run resumed in the middle of an epoch sees the rest of that epoch's order.

    The trainer calls :meth:`start_epoch` before each pass over the loader,
    keeps :meth:`state` in every checkpoint, and calls :meth:`restore` once when
    it resumes. ``skip`` counts this process's indices already consumed.
    """

    def start_epoch(self, epoch: int, skip: int = 0) -> None:
        """The next pass is epoch ``epoch`` (0-based), from its ``skip``-th index."""
        raise NotImplementedError

    def state(self) -> dict[str, Any]:
        """What a checkpoint must keep to continue the current pass."""
        raise NotImplementedError

    def restore(self, state: Mapping[str, Any], skip: int) -> None:
        """Continue the pass ``state`` describes, from its ``skip``-th index."""
        raise NotImplementedError


def draw_seed() -> int:
    """One draw from the global RNG, as ``RandomSampler`` and ``DataLoader`` do."""
    return int(torch.empty((), dtype=torch.int64).random_().item())


class BookOrderSampler(torch.utils.data.Sampler[int], DataOrder):
    """``RandomSampler`` (without replacement) with a replayable pass.

    ``replay(seed, start)`` makes the next pass reuse permutation ``seed`` and
    skip its first ``start`` indices, drawing nothing from the global RNG.
    """

    def __init__(self, n: int) -> None:
        self.n = n
        self.seed: int | None = None  # permutation seed of the current pass
        self._replay: tuple[int, int] | None = None

    def replay(self, seed: int, start: int) -> None:
        self._replay = (seed, start)

    def start_epoch(self, epoch: int, skip: int = 0) -> None:
        """Nothing to do: a pass draws its permutation when it starts (or
        replays the one :meth:`restore` set up)."""

    def state(self) -> dict[str, Any]:
        return {} if self.seed is None else {"epoch_order_seed": self.seed}

    def restore(self, state: Mapping[str, Any], skip: int) -> None:
        if skip > 0:
            self.replay(int(state["epoch_order_seed"]), skip)

    def __iter__(self) -> Iterator[int]:
        if self._replay is not None:
            self.seed, start = self._replay
            self._replay = None
        else:
            self.seed, start = draw_seed(), 0
        g = torch.Generator().manual_seed(self.seed)
        yield from torch.randperm(self.n, generator=g).tolist()[start:]

    def __len__(self) -> int:
        if self._replay is not None:
            return self.n - self._replay[1]
        return self.n
