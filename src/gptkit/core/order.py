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

from collections.abc import Iterator

import torch


def draw_seed() -> int:
    """One draw from the global RNG, as ``RandomSampler`` and ``DataLoader`` do."""
    return int(torch.empty((), dtype=torch.int64).random_().item())


class BookOrderSampler(torch.utils.data.Sampler[int]):
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
