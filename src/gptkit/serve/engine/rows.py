"""One sequence of a continuous batch: its sampling state and its output.

Everything here is per row, so a row samples exactly as it would alone: its
own sampler instance (``Sampler.start(1)``), its own ``torch.Generator``, its
own penalties, in the order of the shared decode loop of
:mod:`gptkit.core.generate` (penalties on the float32 logits, then the
sampler's draw, then the penalties' update).

OpenAI's ``frequency_penalty`` and ``presence_penalty`` subtract
``count * frequency + (count > 0) * presence`` from the logit of every token
already generated (the prompt does not count), as OpenAI's API reference
defines them; ``logit_bias`` adds a constant per token id.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from gptkit.core.interfaces import Sampler
from gptkit.core.penalties import Penalties
from gptkit.core.text import TextStream, completion_text
from gptkit.serve.engine.requests import BatchRequest, RequestHandle, TokenLogprob


def token_logprob(logprobs: Tensor, token: int, k: int) -> TokenLogprob:
    """``token``'s entry of a row of log-probabilities (V,), with the top ``k``."""
    top: list[tuple[int, float]] = []
    if k > 0:
        values, ids = torch.topk(logprobs, k)
        top = list(zip(ids.tolist(), values.tolist(), strict=True))
    return TokenLogprob(token, float(logprobs[token]), top)


class RowSampling:
    """Next-token choice for one row: penalties, bias, sampler, generator."""

    def __init__(
        self,
        sampler: Sampler,
        generator: torch.Generator,
        request: BatchRequest,
        prompt: Sequence[int],
        vocab_size: int,
        device: torch.device,
    ) -> None:
        self.sampler = sampler
        self.generator = generator
        self.logprobs = request.logprobs
        sampler.start(1)
        self.penalties = Penalties(
            [list(prompt)],
            vocab_size,
            device,
            request.repetition_penalty,
            request.no_repeat_ngram_size,
        )
        self.frequency = request.frequency_penalty
        self.presence = request.presence_penalty
        self.counts: Tensor | None = None
        if self.frequency or self.presence:
            self.counts = torch.zeros(1, vocab_size, device=device)
        self.bias: Tensor | None = None
        if request.logit_bias:
            self.bias = torch.zeros(1, vocab_size, device=device)
            for token, value in request.logit_bias.items():
                self.bias[0, token] = value

    def next_token(self, logits: Tensor) -> tuple[int, TokenLogprob | None]:
        """The next token from this row's float32 logits (1, V)."""
        processed = self.penalties.apply(logits)
        if self.counts is not None:
            seen = (self.counts > 0).float()
            processed = processed - self.counts * self.frequency - seen * self.presence
        if self.bias is not None:
            processed = processed + self.bias[:, : processed.shape[-1]]
        token = int(self.sampler.sample(processed, self.generator)[0])
        self.penalties.update([token])
        if self.counts is not None:
            self.counts[0, token] += 1
        logprob = None
        if self.logprobs is not None:
            raw = torch.log_softmax(logits[0], dim=-1)  # the model's distribution
            logprob = token_logprob(raw, token, self.logprobs)
        return token, logprob


@dataclass
class Row:
    """A decoding sequence: which request and choice, its sampling, its text
    (:class:`~gptkit.core.text.TextStream`: pieces that are never taken back)."""

    handle: RequestHandle
    choice: int
    sampling: RowSampling
    stream: TextStream
    new_ids: list[int] = field(default_factory=list)
    last_token: int = -1

    @property
    def generated(self) -> int:
        return len(self.new_ids)

    def accept(
        self,
        token: int,
        logprob: TokenLogprob | None,
        eos_id: int,
        emit: Callable[[int, list[int], str, list[TokenLogprob] | None], None],
    ) -> str | None:
        """Record a sampled token and report what it released through ``emit``
        (choice, token ids, text, logprobs); the finish reason if the row ends:
        ``"stop"`` at end-of-text or a stop string, ``"length"`` at the limit."""
        request = self.handle.request
        self.new_ids.append(token)
        self.last_token = token
        eos = request.stop_at_eos and token == eos_id
        stopped = eos
        if not eos and self.stream.stop_strings:
            _, stopped = completion_text(self.new_ids, self.stream.stop_strings)
        finished = stopped or self.generated >= request.max_new_tokens
        text = self.stream.update(self.new_ids, finished)
        if eos:  # end-of-text is counted, never shown
            if text:
                emit(self.choice, [], text, None)
        else:
            emit(self.choice, [token], text, [logprob] if logprob else None)
        if stopped:
            return "stop"
        return "length" if finished else None
