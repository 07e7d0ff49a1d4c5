"""Corpora -> token ids -> windows -> batches (the book's chapter 2 and 5 data path).

The text is split by characters at ``train_ratio`` and each part tokenized
separately (the book's order); windows of ``context_length`` tokens start every
``stride`` tokens (``GPTDatasetV1``), targets shifted by one. The training batches
are shuffled with a generator seeded from ``(seed, epoch)`` so the data order is
a pure function of the epoch (exact resume, one shard per process under DDP) and
drop the last partial batch; validation batches are neither shuffled nor dropped.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from gptkit.core.order import DataOrder
from gptkit.core.tokenizer import ENDOFTEXT, encode
from gptkit.errors import GptkitError, SettingError


def resolve_corpora(specs: Sequence[str]) -> list[tuple[str, object]]:
    """Each spec is a registered corpus name or a path/glob (the ``files`` corpus)."""
    from gptkit.core.registry import get_registry

    corpora = get_registry().corpora
    out = []
    for spec in specs:
        if spec in corpora:
            out.append((spec, corpora.create(spec)))
            continue
        if not any(c in spec for c in "*?[") and not _exists(Path(spec)):
            if "/" in spec or os.sep in spec or Path(spec).suffix:
                raise GptkitError(f"corpus file not found: {spec}")
            raise GptkitError(
                f"unknown corpus {spec!r}: neither a corpus name nor an existing"
                f" file or directory (corpora: {', '.join(corpora.names())})"
            )
        out.append((spec, corpora.create("files", paths=(spec,))))
    return out


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:  # a name too long, ...: reported as not found
        return False


def load_text(specs: Sequence[str]) -> str:
    """All documents of all corpora, joined with ``<|endoftext|>``."""
    return load_corpora(specs)[0]


def load_corpora(specs: Sequence[str]) -> tuple[str, str]:
    """(text, sample prompt): the joined documents and the first corpus's
    suggested prompt for per-epoch samples."""
    if not specs:
        raise SettingError("give at least one {corpus}")
    docs: list[str] = []
    resolved = resolve_corpora(specs)
    for _, corpus in resolved:
        docs.extend(corpus.documents())  # type: ignore[attr-defined]
    if not docs or not any(d.strip() for d in docs):
        raise GptkitError(f"corpus {', '.join(specs)} is empty")
    return ENDOFTEXT.join(docs), resolved[0][1].sample_prompt  # type: ignore[attr-defined]


class TokenWindows(torch.utils.data.Dataset):
    """Input/target windows over a 1-D tensor of token ids (``GPTDatasetV1``)."""

    def __init__(self, ids: Tensor, context_length: int, stride: int) -> None:
        self.ids = ids
        self.context_length = context_length
        # The book's range(0, len - max_length, stride): every target in bounds.
        self.starts = range(0, max(0, len(ids) - context_length), stride)

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        s = self.starts[i]
        return self.ids[s : s + self.context_length], self.ids[
            s + 1 : s + self.context_length + 1
        ]


_MASK64 = (1 << 64) - 1


def _mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser (Steele, Lea & Flood, 2014) on uint64 arrays."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


class FeistelPermutation:
    """A pseudo-random permutation of ``range(n)`` evaluated index by index, in
    O(1) memory: a four-round balanced Feistel network over the smallest even
    number of bits that holds ``n - 1``, with cycle walking to stay below ``n``
    (Black & Rogaway, 2002, "Ciphers with arbitrary finite domains"). Keys come
    from ``seed``; the same seed gives the same permutation everywhere."""

    ROUNDS = 4

    def __init__(self, n: int, seed: int) -> None:
        self.n = n
        bits = max(2, (n - 1).bit_length())
        bits += bits % 2
        self.half = np.uint64(bits // 2)
        self.mask = np.uint64((1 << (bits // 2)) - 1)
        base = seed & _MASK64
        self.keys = [
            _mix64(
                np.array(
                    [(base + 0x9E3779B97F4A7C15 * (i + 1)) & _MASK64], dtype=np.uint64
                )
            )[0]
            for i in range(self.ROUNDS)
        ]

    def _encrypt(self, x: np.ndarray) -> np.ndarray:
        left, right = x >> self.half, x & self.mask
        for key in self.keys:
            left, right = right, left ^ (_mix64(right ^ key) & self.mask)
        return (left << self.half) | right

    def __call__(self, positions: np.ndarray) -> np.ndarray:
        """The images of ``positions`` (each in ``range(n)``), as int64."""
        out = self._encrypt(positions.astype(np.uint64))
        outside = out >= np.uint64(self.n)
        while outside.any():  # cycle walking: at most a few rounds on average
            out[outside] = self._encrypt(out[outside])
            outside = out >= np.uint64(self.n)
        return out.astype(np.int64)


class EpochSampler(torch.utils.data.Sampler[int], DataOrder):
    """Indices in a seeded per-epoch order, optionally one shard of a process group.

    The order of epoch ``e`` is ``randperm(n)`` from a generator seeded with
    ``seed + e`` (identity order when not shuffling). With ``lazy=True`` (corpora
    larger than memory) it is a :class:`FeistelPermutation` keyed by ``(seed,
    e)`` instead, computed as it is consumed, so memory does not grow with ``n``.

    Process ``rank`` of ``world_size`` takes positions ``rank, rank +
    world_size, ...`` of that order, after dropping the last ``n % world_size``
    so every process has as many batches. Batch ``b`` of the ``world_size``
    processes together then holds positions ``b * B * W ... (b + 1) * B * W - 1``
    (``B`` the per-process batch size): exactly batch ``b`` of a single process
    with batch size ``B * W``. ``start`` skips this process's first positions
    (resuming mid-epoch).
    """

    CHUNK = 8192

    def __init__(
        self,
        n: int,
        *,
        shuffle: bool,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        lazy: bool = False,
    ) -> None:
        self.n = n
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.lazy = lazy
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch = epoch
        self.start = start

    def start_epoch(self, epoch: int, skip: int = 0) -> None:
        self.set_epoch(epoch, skip)

    def state(self) -> dict[str, Any]:
        return {}  # the order is a function of (seed, epoch)

    def restore(self, state: Mapping[str, Any], skip: int) -> None:
        """Nothing to keep: :meth:`start_epoch` positions the pass."""

    @property
    def per_rank(self) -> int:
        """Positions of one epoch that fall to each process."""
        return self.n // self.world_size

    def order(self) -> list[int]:
        """This process's indices of the epoch (materialised; small ``n`` only)."""
        if self.lazy:
            return list(self._lazy_iter(0))
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        usable = self.per_rank * self.world_size
        return order[:usable][self.rank :: self.world_size]

    def _lazy_iter(self, start: int) -> Iterator[int]:
        perm = (
            FeistelPermutation(self.n, self.seed * 1_000_003 + self.epoch)
            if self.shuffle
            else None
        )
        for first in range(start, self.per_rank, self.CHUNK):
            last = min(first + self.CHUNK, self.per_rank)
            positions = np.arange(first, last, dtype=np.int64)
            positions = positions * self.world_size + self.rank
            yield from (perm(positions) if perm is not None else positions).tolist()

    def __iter__(self) -> Iterator[int]:
        if self.lazy:
            return self._lazy_iter(self.start)
        return iter(self.order()[self.start :])

    def __len__(self) -> int:
        return self.per_rank - self.start


@dataclass
class DataSplits:
    """Train and validation loaders plus what the user wants to know about them.

    Under DDP the training loader yields this process's batches; the evaluation
    loaders yield global batches (batch size x processes), which the trainer
    splits between the processes.
    """

    train_loader: torch.utils.data.DataLoader
    # The training windows in their fixed order, for evaluation: losses over the
    # first eval_iter batches are then comparable across steps and runs.
    train_eval_loader: torch.utils.data.DataLoader
    val_loader: torch.utils.data.DataLoader
    train_sampler: DataOrder
    characters: int
    total_tokens: int
    train_tokens: int  # tokens in the training batches of one epoch (all processes)
    val_tokens: int  # tokens in the validation batches
    world_size: int = 1


def make_loaders(
    text: str,
    *,
    context_length: int,
    batch_size: int,
    stride: int | None = None,
    train_ratio: float = 0.9,
    seed: int = 123,
    rank: int = 0,
    world_size: int = 1,
    order: str = "seeded",
) -> DataSplits:
    """Split, tokenize and window ``text``; check there is enough of it.

    ``order``: ``seeded`` (a permutation per epoch from ``seed``: any number of
    processes) or ``book`` (the book's DataLoader shuffling, exactly)."""
    if not 0.0 < train_ratio < 1.0:
        raise SettingError(
            f"{{train_ratio}} must be between 0 and 1, got {train_ratio}"
        )
    _check_batching(batch_size, stride)
    stride = stride or context_length
    split = int(train_ratio * len(text))
    train_ids = torch.tensor(encode(text[:split]), dtype=torch.long)
    val_ids = torch.tensor(encode(text[split:]), dtype=torch.long)
    _check_length(len(train_ids), len(val_ids), context_length)
    return _splits(
        TokenWindows(train_ids, context_length, stride),
        TokenWindows(val_ids, context_length, stride),
        batch_size=batch_size,
        seed=seed,
        rank=rank,
        world_size=world_size,
        lazy=False,
        characters=len(text),
        total_tokens=len(train_ids) + len(val_ids),
        order=order,
    )


def make_prepared_loaders(
    directory: Path,
    *,
    context_length: int,
    batch_size: int,
    stride: int | None = None,
    seed: int = 123,
    rank: int = 0,
    world_size: int = 1,
) -> DataSplits:
    """Loaders that stream windows from a corpus made by ``gptkit prepare``.

    The token file is memory-mapped and the training order is computed as it is
    consumed, so memory stays bounded whatever the corpus size; the split into
    training and validation tokens is the one ``gptkit prepare`` recorded.
    """
    from gptkit.core.token_files import open_tokens, read_meta

    _check_batching(batch_size, stride)
    stride = stride or context_length
    meta = read_meta(directory)
    tokens = open_tokens(directory, meta)
    n_train = int(meta["train_tokens"])
    _check_length(n_train, len(tokens) - n_train, context_length)
    return _splits(
        MemmapWindows(tokens[:n_train], context_length, stride),
        MemmapWindows(tokens[n_train:], context_length, stride),
        batch_size=batch_size,
        seed=seed,
        rank=rank,
        world_size=world_size,
        lazy=True,
        characters=int(meta.get("characters", 0)),
        total_tokens=len(tokens),
    )


class MemmapWindows(torch.utils.data.Dataset):
    """``TokenWindows`` over a memory-mapped uint16 token array: a window is
    read from the file (the page cache) only when it is used."""

    def __init__(self, tokens: np.ndarray, context_length: int, stride: int) -> None:
        self.tokens = tokens
        self.context_length = context_length
        self.stride = stride
        self.count = len(range(0, max(0, len(tokens) - context_length), stride))

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        s = i * self.stride
        chunk = torch.from_numpy(
            self.tokens[s : s + self.context_length + 1].astype(np.int64)
        )
        return chunk[:-1], chunk[1:]


def _check_batching(batch_size: int, stride: int | None) -> None:
    if batch_size < 1:
        raise SettingError(f"{{batch_size}} must be at least 1, got {batch_size}")
    if stride is not None and stride < 1:
        raise SettingError(f"{{stride}} must be at least 1, got {stride}")


def _check_length(n_train: int, n_val: int, context_length: int) -> None:
    need = context_length + 1
    for part, n in (("training", n_train), ("validation", n_val)):
        if n < need:
            raise SettingError(
                f"corpus too short: the {part} part has {n} tokens, but"
                f" {{context_length}} {context_length} needs at least {need}; use a"
                " longer text, a smaller {context_length} or another {train_ratio}"
            )


def _splits(
    train_set: torch.utils.data.Dataset,
    val_set: torch.utils.data.Dataset,
    *,
    batch_size: int,
    seed: int,
    rank: int,
    world_size: int,
    lazy: bool,
    characters: int,
    total_tokens: int,
    order: str = "seeded",
) -> DataSplits:
    """The loaders over two window datasets (see :class:`DataSplits`)."""
    if order == "book":
        return _book_splits(
            train_set, val_set, batch_size, characters, total_tokens, world_size, lazy
        )
    n_train = len(train_set)  # type: ignore[arg-type]
    context_length = train_set.context_length  # type: ignore[attr-defined]
    if n_train // world_size < batch_size:
        raise SettingError(
            f"corpus too short: {n_train} training windows of {context_length}"
            f" tokens make no full batch of {{batch_size}} {batch_size}"
            + (f" on each of {world_size} processes" if world_size > 1 else "")
        )
    sampler = EpochSampler(
        n_train, shuffle=True, seed=seed, rank=rank, world_size=world_size, lazy=lazy
    )

    # Each loader gets its own generator: creating an iterator draws a seed from
    # it, and drawing from the global one would shift the dropout masks of a
    # resumed run.
    def loader(
        dataset: torch.utils.data.Dataset, size: int, **kwargs: object
    ) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(
            dataset, batch_size=size, generator=torch.Generator(), **kwargs
        )

    global_batch = batch_size * world_size
    train_loader = loader(train_set, batch_size, sampler=sampler, drop_last=True)
    return DataSplits(
        train_loader=train_loader,
        train_eval_loader=loader(
            train_set, global_batch, shuffle=False, drop_last=True
        ),
        val_loader=loader(val_set, global_batch, shuffle=False, drop_last=False),
        train_sampler=sampler,
        characters=characters,
        total_tokens=total_tokens,
        train_tokens=len(train_loader) * global_batch * context_length,
        val_tokens=len(val_set) * context_length,  # type: ignore[arg-type]
        world_size=world_size,
    )


def _book_splits(
    train_set: torch.utils.data.Dataset,
    val_set: torch.utils.data.Dataset,
    batch_size: int,
    characters: int,
    total_tokens: int,
    world_size: int,
    lazy: bool,
) -> DataSplits:
    """The book's loaders: shuffled with the global RNG (see core/order.py); the
    evaluation reads the first eval_iter batches of another shuffled pass."""
    from gptkit.core.order import BookOrderSampler

    if world_size > 1 or lazy:
        raise SettingError(
            "{data_order} book is for one process and in-memory corpora;"
            " use {data_order} seeded"
        )
    n_train = len(train_set)  # type: ignore[arg-type]
    context_length = train_set.context_length  # type: ignore[attr-defined]
    if n_train < batch_size:
        raise SettingError(
            f"corpus too short: {n_train} training windows of {context_length}"
            f" tokens make no full batch of {{batch_size}} {batch_size}"
        )
    sampler = BookOrderSampler(n_train)
    train_loader = torch.utils.data.DataLoader(
        train_set, batch_size=batch_size, sampler=sampler, drop_last=True
    )
    return DataSplits(
        train_loader=train_loader,
        train_eval_loader=torch.utils.data.DataLoader(
            train_set,
            batch_size=batch_size,
            sampler=BookOrderSampler(n_train),
            drop_last=True,
        ),
        val_loader=torch.utils.data.DataLoader(
            val_set, batch_size=batch_size, shuffle=False, drop_last=False
        ),
        train_sampler=sampler,  # type: ignore[arg-type]
        characters=characters,
        total_tokens=total_tokens,
        train_tokens=len(train_loader) * batch_size * context_length,
        val_tokens=len(val_set) * context_length,  # type: ignore[arg-type]
        world_size=1,
    )


def eval_batches(loader: torch.utils.data.DataLoader, limit: int | None) -> int:
    """How many batches an evaluation over ``loader`` reads (the book's rule)."""
    n = len(loader)
    return n if limit is None else min(limit, n)
