"""Text in, text out: prompts as strings, stop strings, streaming.

:class:`TextStream` turns one row's growing token ids into text pieces that
never have to be taken back: it holds back an incomplete UTF-8 character (a
byte-level BPE token may end mid-character) and anything that could still turn
out to be the start of a stop string, so the pieces of a stream always add up
to the text a non-streamed generation returns. :func:`iter_text` drives the
engine's step iterator and yields those pieces; :func:`generate_text` returns
the finished results.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from gptkit.core.generate import Generated, iter_tokens
from gptkit.core.interfaces import Sampler, SearchStrategy
from gptkit.core.model import GPTModel
from gptkit.core.tokenizer import EOT_ID, Tokenizer, gpt2_tokenizer


@dataclass
class TextResult:
    """One prompt's continuation, as text and ids."""

    prompt: str
    completion: str
    prompt_ids: list[int]
    new_ids: list[int]
    finish_reason: str
    score: float | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "prompt": self.prompt,
            "completion": self.completion,
            "text": self.prompt + self.completion,
            "prompt_ids": self.prompt_ids,
            "token_ids": self.new_ids,
            "finish_reason": self.finish_reason,
            "score": self.score,
        }


def completion_text(
    new_ids: Sequence[int],
    stop_strings: Sequence[str] = (),
    eos_id: int | Sequence[int] | None = None,
    tokenizer: Tokenizer | None = None,
) -> tuple[str, bool]:
    """The text of generated ids (without a final end-of-text: ``eos_id``, one
    id or several), cut before the first stop string; and whether a stop
    string was found. ``tokenizer``: GPT-2's when None."""
    ids = list(new_ids)
    eos = (eos_id,) if isinstance(eos_id, int) else tuple(eos_id or ())
    if ids and ids[-1] in eos:
        ids = ids[:-1]
    text = (tokenizer or gpt2_tokenizer()).decode(ids)
    cuts = [text.find(s) for s in stop_strings if s in text]
    if cuts:
        return text[: min(cuts)], True
    return text, False


@dataclass
class TextStream:
    """One row's text as it grows: :meth:`update` returns only text that is
    final (see the module docs)."""

    stop_strings: Sequence[str] = ()
    eos_id: int | Sequence[int] | None = EOT_ID
    sent: int = 0
    tokenizer: Tokenizer | None = None
    text: str = field(default="", init=False)

    def update(self, new_ids: Sequence[int], finished: bool) -> str:
        """The next piece of text after ``new_ids`` (all of the row's ids so
        far); ``finished``: the row is done, send everything that is left."""
        self.text, stopped = completion_text(
            new_ids, self.stop_strings, self.eos_id, self.tokenizer
        )
        safe = len(self.text)
        if not (finished or stopped):
            if self.text.endswith("\ufffd"):  # an incomplete UTF-8 character
                safe = len(self.text.rstrip("\ufffd"))
            hold = max(
                (_partial(self.text[:safe], s) for s in self.stop_strings), default=0
            )
            safe = max(self.sent, safe - hold)
        piece = self.text[self.sent : safe]
        self.sent = max(self.sent, safe)
        return piece


def _partial(text: str, stop: str) -> int:
    """Length of the longest end of ``text`` that begins ``stop`` (held back:
    not ``len(stop) - 1`` characters regardless, so streams stay streams)."""
    at = text.find(stop[0], max(0, len(text) - len(stop) + 1)) if stop else -1
    while at != -1 and not stop.startswith(text[at:]):
        at = text.find(stop[0], at + 1)
    return 0 if at == -1 else len(text) - at


class TextGeneration:
    """A batch of text generations in progress: iterate it for ``(row, piece)``
    pairs as text is produced; :attr:`results` holds the outcome once the
    iteration ends (closing the iterator early stops the generation)."""

    def __init__(
        self,
        model: GPTModel,
        prompts: Sequence[str],
        sampler: Sampler | SearchStrategy,
        *,
        max_new_tokens: int = 50,
        stop_strings: Sequence[str] = (),
        seed: int | None = None,
        truncate: bool = True,
        stop_at_eos: bool = True,
        repetition_penalty: float = 1.0,
        no_repeat_ngram_size: int = 0,
        compiled: bool = False,
        on_step: Callable[[], None] | None = None,
        tokenizer: Tokenizer | None = None,
    ) -> None:
        self.model = model
        self.prompts = list(prompts)
        self.sampler = sampler
        self.stop_strings = tuple(stop_strings)
        self.tokenizer = tokenizer or gpt2_tokenizer()
        eos: Any = self.tokenizer.eos_ids
        self.eos_id = eos if stop_at_eos and eos else None
        self.results: list[TextResult] = []
        generator = None
        if seed is not None:
            device = next(model.parameters()).device
            generator = torch.Generator(device=device).manual_seed(seed)
        self._settings = {
            "max_new_tokens": max_new_tokens,
            "eos_id": self.eos_id,
            "stop": self._stop if self.stop_strings else None,
            "generator": generator,
            "truncate": truncate,
            "repetition_penalty": repetition_penalty,
            "no_repeat_ngram_size": no_repeat_ngram_size,
            "compiled": compiled,
            "on_step": on_step,
            "vocab_limit": self.tokenizer.vocab_limit(model.cfg.vocab_size),
            "tokenizer": self.tokenizer,
        }

    def _stop(self, row: int, new_ids: list[int]) -> bool:
        text = self.tokenizer.decode(new_ids)
        return any(s in text for s in self.stop_strings)

    def __iter__(self) -> Iterator[tuple[int, str]]:
        prompt_ids = [self.tokenizer.encode(p) for p in self.prompts]
        whole = isinstance(self.sampler, SearchStrategy)  # yields finished rows
        limit = int(self._settings["max_new_tokens"])  # type: ignore[call-overload]
        streams: dict[int, TextStream] = {}
        generated: list[Generated] = []
        for generated in iter_tokens(
            self.model, prompt_ids, self.sampler, **self._settings
        ):
            for row, result in enumerate(generated):
                stream = streams.setdefault(
                    row,
                    TextStream(
                        self.stop_strings, self.eos_id, tokenizer=self.tokenizer
                    ),
                )
                done = (
                    whole
                    or result.finish_reason != "length"
                    or len(result.new_ids) >= limit
                )
                piece = stream.update(result.new_ids, done)
                if piece:
                    yield row, piece
        self.results = [self._result(r) for r in generated]

    def _result(self, r: Generated) -> TextResult:
        completion, _ = completion_text(
            r.new_ids, self.stop_strings, self.eos_id, self.tokenizer
        )
        prompt = self.prompts[r.prompt_index]
        return TextResult(
            prompt, completion, r.prompt_ids, r.new_ids, r.finish_reason, r.score
        )


def iter_text(
    model: GPTModel,
    prompts: Sequence[str],
    sampler: Sampler | SearchStrategy,
    **settings: object,
) -> Iterator[tuple[int, str]]:
    """``(row, piece)`` pairs as the text of each prompt's continuation grows
    (see :class:`TextGeneration` for the settings)."""
    yield from TextGeneration(model, prompts, sampler, **settings)  # type: ignore[arg-type]


def generate_text(
    model: GPTModel,
    prompts: Sequence[str],
    sampler: Sampler | SearchStrategy,
    **settings: object,
) -> list[TextResult]:
    """Continue each prompt (batched); see :class:`TextGeneration`."""
    generation = TextGeneration(model, prompts, sampler, **settings)  # type: ignore[arg-type]
    for _ in generation:
        pass
    return generation.results
