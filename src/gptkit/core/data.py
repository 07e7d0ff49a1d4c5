"""Corpora -> token ids -> windows -> batches (the book's chapter 2 and 5 data path).

The text is split by characters at ``train_ratio`` and each part tokenized
separately (the book's order); windows of ``context_length`` tokens start every
``stride`` tokens (``GPTDatasetV1``), targets shifted by one. The training batches
are shuffled with a generator seeded from ``(seed, epoch)`` so the data order is
a pure function of the epoch (exact resume, one shard per process under DDP) and
drop the last partial batch; validation batches are neither shuffled nor dropped.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from gptkit.core.errors import GptkitError
from gptkit.core.tokenizer import ENDOFTEXT, encode


def resolve_corpora(specs: Sequence[str]) -> list[tuple[str, object]]:
    """Each spec is a registered corpus name or a path/glob (the ``files`` corpus)."""
    from gptkit.core.registry import get_registry

    corpora = get_registry().corpora
    out = []
    for spec in specs:
        if spec in corpora:
            out.append((spec, corpora.create(spec)))
        else:
            out.append((spec, corpora.create("files", paths=(spec,))))
    return out


def load_text(specs: Sequence[str]) -> str:
    """All documents of all corpora, joined with ``<|endoftext|>``."""
    return load_corpora(specs)[0]


def load_corpora(specs: Sequence[str]) -> tuple[str, str]:
    """(text, sample prompt): the joined documents and the first corpus's
    suggested prompt for per-epoch samples."""
    if not specs:
        raise GptkitError("give at least one --corpus")
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


class EpochSampler(torch.utils.data.Sampler[int]):
    """Indices in a seeded per-epoch order, optionally one shard of a process group.

    The order of epoch ``e`` is ``randperm(n)`` from a generator seeded with
    ``seed + e`` (identity order when not shuffling); ``start`` skips indices
    already consumed (resuming mid-epoch).
    """

    def __init__(
        self,
        n: int,
        *,
        shuffle: bool,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.n = n
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch = epoch
        self.start = start

    def order(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        return order[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self.order()[self.start :])

    def __len__(self) -> int:
        return len(self.order()) - self.start


@dataclass
class DataSplits:
    """Train and validation loaders plus what the user wants to know about them."""

    train_loader: torch.utils.data.DataLoader
    # The training windows in their fixed order, for evaluation: losses over the
    # first --eval-iter batches are then comparable across steps and runs.
    train_eval_loader: torch.utils.data.DataLoader
    val_loader: torch.utils.data.DataLoader
    train_sampler: EpochSampler
    characters: int
    total_tokens: int
    train_tokens: int  # tokens in the training batches of one epoch
    val_tokens: int  # tokens in the validation batches


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
) -> DataSplits:
    """Split, tokenize and window ``text``; check there is enough of it."""
    if not 0.0 < train_ratio < 1.0:
        raise GptkitError(f"--train-ratio must be between 0 and 1, got {train_ratio}")
    if batch_size < 1:
        raise GptkitError(f"--batch-size must be at least 1, got {batch_size}")
    stride = stride or context_length
    if stride < 1:
        raise GptkitError(f"--stride must be at least 1, got {stride}")
    split = int(train_ratio * len(text))
    train_ids = torch.tensor(encode(text[:split]), dtype=torch.long)
    val_ids = torch.tensor(encode(text[split:]), dtype=torch.long)
    need = context_length + 1
    for part, ids in (("training", train_ids), ("validation", val_ids)):
        if len(ids) < need:
            raise GptkitError(
                f"corpus too short: the {part} part has {len(ids)} tokens, but"
                f" --context-length {context_length} needs at least {need}; use a"
                " longer text, a smaller --context-length or another --train-ratio"
            )
    train_set = TokenWindows(train_ids, context_length, stride)
    val_set = TokenWindows(val_ids, context_length, stride)
    per_process = len(train_set) // world_size
    if per_process < batch_size:
        raise GptkitError(
            f"corpus too short: {len(train_set)} training windows of"
            f" {context_length} tokens make no full batch of --batch-size {batch_size}"
            + (f" on each of {world_size} processes" if world_size > 1 else "")
        )
    sampler = EpochSampler(
        len(train_set), shuffle=True, seed=seed, rank=rank, world_size=world_size
    )

    # Each loader gets its own generator: creating an iterator draws a seed from
    # it, and drawing from the global one would shift the dropout masks of a
    # resumed run.
    def loader(dataset: TokenWindows, **kwargs: object) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(
            dataset, batch_size=batch_size, generator=torch.Generator(), **kwargs
        )

    train_loader = loader(train_set, sampler=sampler, drop_last=True)
    val_loader = loader(val_set, shuffle=False, drop_last=False)
    train_batches = len(train_loader)
    return DataSplits(
        train_loader=train_loader,
        train_eval_loader=loader(train_set, shuffle=False, drop_last=True),
        val_loader=val_loader,
        train_sampler=sampler,
        characters=len(text),
        total_tokens=len(train_ids) + len(val_ids),
        train_tokens=train_batches * batch_size * context_length * world_size,
        val_tokens=len(val_set) * context_length,
    )


def eval_batches(loader: torch.utils.data.DataLoader, limit: int | None) -> int:
    """How many batches an evaluation over ``loader`` reads (the book's rule)."""
    n = len(loader)
    return n if limit is None else min(limit, n)
