"""Instruction records -> token ids -> padded batches (the book's section 7.3).

Each record becomes ``prompt + response`` under a prompt style, tokenized
once (``InstructionDataset``). A batch is padded to its longest example plus
one with ``<|endoftext|>`` (id 50256); the targets are the inputs shifted by
one, and every padding token of the targets but the first (the end of the
text the model must learn to write) is replaced by -100, which the
cross-entropy ignores; finally both are cut to ``allowed_max_length`` (the
book's ``custom_collate_fn``). With ``mask_prompt`` the prompt's targets are
-100 too, so only the response is learned (the book's exercise 7.2).

An example whose prompt alone is longer than ``allowed_max_length`` teaches
nothing (no response token would remain): it is skipped, and counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from gptkit.core.tokenizer import EOT_ID, encode
from gptkit.formats.instructions import Record, prompt_and_response

IGNORE_INDEX = -100


class InstructionDataset(torch.utils.data.Dataset):
    """Tokenized examples: items are ``(prompt_length, ids)``."""

    def __init__(self, records: Sequence[Record], style: Any, max_length: int) -> None:
        self.items: list[tuple[int, list[int]]] = []
        self.skipped = 0
        for record in records:
            prompt, response = prompt_and_response(style, record)
            n_prompt = len(encode(prompt))
            if n_prompt >= max_length:
                self.skipped += 1
                continue
            self.items.append((n_prompt, encode(prompt + response)))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[int, list[int]]:
        return self.items[i]

    @property
    def context_length(self) -> int:
        """The mean length of an example (with its end of text), in tokens:
        what the data loaders count tokens by."""
        return round(self.token_count(len(self.items)) / max(1, len(self.items)))

    def token_count(self, items: int) -> int:
        """Tokens (each example plus its end-of-text) in ``items`` examples of
        average length."""
        if not self.items:
            return 0
        total = sum(len(ids) + 1 for _, ids in self.items)
        return round(total * items / len(self.items))


@dataclass(frozen=True)
class InstructionCollator:
    """The book's ``custom_collate_fn`` (and, with ``mask_prompt``, its
    exercise-7.2 ``custom_collate_with_masking_fn``)."""

    pad_token_id: int = EOT_ID
    ignore_index: int = IGNORE_INDEX
    allowed_max_length: int | None = 1024
    mask_prompt: bool = False

    def __call__(self, batch: Sequence[tuple[int, list[int]]]) -> tuple[Tensor, Tensor]:
        width = max(len(ids) + 1 for _, ids in batch)  # the longest, plus its end
        inputs_list, targets_list = [], []
        for prompt_length, ids in batch:
            padded = ids + [self.pad_token_id] * (width - len(ids))  # (width,)
            inputs = torch.tensor(padded[:-1])  # (width - 1,)
            targets = torch.tensor(padded[1:])  # shifted by one
            pads = torch.nonzero(targets == self.pad_token_id).flatten()
            if pads.numel() > 1:  # keep the first: the end of the text
                targets[pads[1:]] = self.ignore_index
            if self.mask_prompt:
                targets[: prompt_length - 1] = self.ignore_index
            if self.allowed_max_length is not None:
                inputs = inputs[: self.allowed_max_length]
                targets = targets[: self.allowed_max_length]
            inputs_list.append(inputs)
            targets_list.append(targets)
        return torch.stack(inputs_list), torch.stack(targets_list)  # (B, T) each
