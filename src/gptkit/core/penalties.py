"""Penalties applied to the logits before any sampler: the repetition penalty of
Keskar et al. (2019, CTRL) and n-gram blocking (Paulus et al., 2018), with the
conventions of transformers' processors (the prompt counts as context; a
penalised logit is divided by the penalty when positive, multiplied when
negative)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


class Penalties:
    """Per-row state for ``repetition_penalty`` and ``no_repeat_ngram_size``."""

    def __init__(
        self,
        rows: Sequence[Sequence[int]],
        vocab_size: int,
        device: torch.device,
        repetition_penalty: float = 1.0,
        no_repeat_ngram_size: int = 0,
    ) -> None:
        self.repetition_penalty = repetition_penalty
        self.n = no_repeat_ngram_size
        self.active = repetition_penalty != 1.0 or no_repeat_ngram_size > 0
        self.seen: Tensor | None = None
        self.history: list[list[int]] = [list(r) for r in rows]
        # (n-1)-gram -> tokens that followed it, per row.
        self.ngrams: list[dict[tuple[int, ...], set[int]]] = [{} for _ in rows]
        if repetition_penalty != 1.0:
            self.seen = torch.zeros(
                len(rows), vocab_size, dtype=torch.bool, device=device
            )
            for i, r in enumerate(rows):
                self.seen[i, list(r)] = True
        if self.n > 0:
            for i, r in enumerate(self.history):
                for end in range(self.n, len(r) + 1):
                    self._add(i, end)

    def _add(self, row: int, end: int) -> None:
        """Record the n-gram of ``history[row]`` ending before index ``end``."""
        seq = self.history[row]
        gram = tuple(seq[end - self.n : end])
        self.ngrams[row].setdefault(gram[:-1], set()).add(gram[-1])

    def apply(self, logits: Tensor) -> Tensor:
        """Penalised copy of ``logits`` (rows, V)."""
        if not self.active:
            return logits
        if self.seen is not None:
            p = self.repetition_penalty
            penalised = torch.where(logits < 0, logits * p, logits / p)
            # An extreme penalty (1e-300, 1e308) overflows: keep such logits
            # finite, at the largest value of their type (the order is kept).
            big = torch.finfo(penalised.dtype).max
            overflow = torch.isinf(penalised) & torch.isfinite(logits)
            penalised = torch.where(overflow, penalised.clamp(-big, big), penalised)
            logits = torch.where(self.seen[:, : logits.shape[-1]], penalised, logits)
        if self.n > 0:
            logits = logits.clone()
            for i, seq in enumerate(self.history):
                if len(seq) + 1 < self.n:
                    continue
                prefix = tuple(seq[len(seq) - self.n + 1 :]) if self.n > 1 else ()
                banned = self.ngrams[i].get(prefix)
                if banned:
                    logits[i, list(banned)] = float("-inf")
        return logits

    def update(self, next_ids: Sequence[int]) -> None:
        """Append one token per row."""
        if not self.active:
            return
        for i, token in enumerate(next_ids):
            self.history[i].append(int(token))
            if self.seen is not None:
                self.seen[i, int(token)] = True
            if self.n > 0 and len(self.history[i]) >= self.n:
                self._add(i, len(self.history[i]))

    def reorder(self, index: Sequence[int]) -> None:
        """Row i takes the state of old row ``index[i]`` (beam search)."""
        if not self.active:
            return
        self.history = [list(self.history[j]) for j in index]
        self.ngrams = [{k: set(v) for k, v in self.ngrams[j].items()} for j in index]
        if self.seen is not None:
            self.seen = self.seen[torch.as_tensor(list(index), device=self.seen.device)]
