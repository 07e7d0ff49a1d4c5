"""Instruction records -> token ids -> padded batches (the book's section 7.3).

Each record becomes ``prompt + response`` under a prompt style, tokenized
once (``InstructionDataset``) by the model's tokenizer (GPT-2's by default). A
batch is padded to its longest example plus one with the end-of-sequence
token (``<|endoftext|>``, id 50256, for GPT-2; the tokenizer's first EOS id
otherwise); the targets are the inputs shifted by one, and every padding
token of the targets but the first (the end of the text the model must learn
to write) is replaced by -100, which the cross-entropy ignores; finally both
are cut to ``allowed_max_length`` (the book's ``custom_collate_fn``). The
padding is found by position, so an end-of-sequence token inside a text (a
chat template's end of turn can be one) stays a target; for GPT-2 text, which
never holds ``<|endoftext|>``, that is exactly the book's rule. With
``mask_prompt`` the prompt's targets are -100 too, so only the response is
learned (the book's exercise 7.2).

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


def encode_text(text: str, tokenizer: Any = None) -> list[int]:
    """Token ids of a prompt: GPT-2's (``tokenizer`` None) or the tokenizer's
    (one BOS where a chat template writes it too: see ``HFTokenizer.encode``)."""
    return encode(text) if tokenizer is None else tokenizer.encode(text)


def pad_id(tokenizer: Any = None) -> int:
    """What batches are padded with, and the end a response learns: GPT-2's
    ``<|endoftext|>``, else the tokenizer's first end-of-sequence id."""
    if tokenizer is None:
        return EOT_ID
    if tokenizer.eos_id is None:
        from gptkit.errors import SettingError

        raise SettingError(
            f"tokenizer {tokenizer.spec} has no end-of-sequence token: finetuning"
            " ends each response with it (give its eos_token in"
            " tokenizer_config.json, or eos_token_id in config.json)"
        )
    return int(tokenizer.eos_id)


class InstructionDataset(torch.utils.data.Dataset):
    """Tokenized examples: items are ``(prompt_length, ids)``."""

    def __init__(
        self,
        records: Sequence[Record],
        style: Any,
        max_length: int,
        tokenizer: Any = None,
    ) -> None:
        self.items: list[tuple[int, list[int]]] = []
        self.skipped = 0
        for record in records:
            prompt, response = prompt_and_response(style, record)
            n_prompt = len(encode_text(prompt, tokenizer))
            if n_prompt >= max_length:
                self.skipped += 1
                continue
            self.items.append((n_prompt, encode_text(prompt + response, tokenizer)))

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
            # Padding after the first (the end of the text) is left out.
            targets[len(ids) :] = self.ignore_index
            if self.mask_prompt:
                targets[: prompt_length - 1] = self.ignore_index
            if self.allowed_max_length is not None:
                inputs = inputs[: self.allowed_max_length]
                targets = targets[: self.allowed_max_length]
            inputs_list.append(inputs)
            targets_list.append(targets)
        return torch.stack(inputs_list), torch.stack(targets_list)  # (B, T) each
