"""The generation engine shared by every per-token sampler.

The prompts are prefilled once into a preallocated :class:`KVCache`; each step
then feeds one token per row. Every row of the cache keeps its own length, so
prompts of different lengths are batched without left padding (a right-padded
prefill, then each row continues from its own last token) and each row gets the
text it would get alone. When prompt + new tokens outgrow the context length,
the engine keeps the most recent ``context_length`` tokens, as the book's
``generate`` does: positions shift with the window, so cached keys and values
are stale, and every step past that point recomputes the window over
left-padded rows (quadratic, but only beyond the context length).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from gptkit.core.interfaces import Sampler, SearchStrategy
from gptkit.core.model import GPTModel, KVCache
from gptkit.core.penalties import Penalties
from gptkit.core.tokenizer import EOT_ID, N_VOCAB
from gptkit.errors import GptkitError

#: Called after every step with (row, new token id) for rows still running.
TokenCallback = Callable[[int, int], None]


@dataclass
class Generated:
    """One row's result: the prompt ids, the new ids, why it stopped."""

    prompt_ids: list[int]
    new_ids: list[int] = field(default_factory=list)
    finish_reason: str = "length"  # "length" | "eos" | "stop"
    score: float | None = None  # beam search: length-normalised log-probability
    prompt_index: int = 0  # which prompt (beam search may return several per prompt)


def _eos_ids(eos_id: int | Sequence[int] | None) -> tuple[int, ...]:
    if eos_id is None:
        return ()
    if isinstance(eos_id, int):
        return (eos_id,)
    return tuple(int(i) for i in eos_id)


def prepare_prompt(
    ids: Sequence[int], context_length: int, truncate: bool, empty: int = EOT_ID
) -> list[int]:
    """An empty prompt starts from end-of-text (``empty``; as GPT-2 does); a
    prompt longer than the context is cut to its last tokens, or refused when
    not ``truncate``."""
    ids = list(ids) or [empty]
    if len(ids) > context_length:
        if not truncate:
            raise GptkitError(
                f"the prompt has {len(ids)} tokens, more than the context length"
                f" {context_length}; shorten it or allow truncation"
            )
        ids = ids[-context_length:]
    return ids


def _left_pad(rows: list[list[int]], device: torch.device) -> tuple[Tensor, Tensor]:
    """(ids, mask), each (B, max_len); padding on the left, mask True on tokens."""
    width = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.bool)
    for i, row in enumerate(rows):
        ids[i, width - len(row) :] = torch.tensor(row)
        mask[i, width - len(row) :] = True
    return ids.to(device), mask.to(device)


def _positions(mask: Tensor) -> Tensor:
    """Position of each token among the real tokens of its row (0 for padding)."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


@dataclass
class GenerationRequest:
    """Everything a decoding strategy needs besides the model.

    ``prompts`` are already prepared (non-empty, within the context length).
    """

    prompts: list[list[int]]
    max_new_tokens: int
    eos_id: int | None = EOT_ID
    #: Every id that ends a sequence (``eos_id`` first; a checkpoint may have
    #: several, such as Llama 3's ``<|eot_id|>`` and ``<|end_of_text|>``).
    eos_ids: tuple[int, ...] = ()
    stop: Callable[[int, list[int]], bool] | None = None
    generator: torch.Generator | None = None
    on_token: TokenCallback | None = None
    vocab_limit: int = N_VOCAB
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    compiled: bool = False  # decode steps through torch.compile (core.compiled)
    #: Called after every decoding step (a progress bar); a search strategy
    #: calls it once per step of each prompt's search.
    on_step: Callable[[], None] | None = None
    #: The model's tokenizer when the caller knows it (a speculative draft
    #: must share it).
    tokenizer: Any = None

    def __post_init__(self) -> None:
        if not self.eos_ids and self.eos_id is not None:
            self.eos_ids = (self.eos_id,)

    def is_eos(self, token: int) -> bool:
        return token in self.eos_ids

    def step_done(self) -> None:
        if self.on_step is not None:
            self.on_step()

    def penalties(
        self, rows: Sequence[Sequence[int]], vocab: int, device: torch.device
    ) -> Penalties:
        return Penalties(
            rows, vocab, device, self.repetition_penalty, self.no_repeat_ngram_size
        )


def next_token_logits(logits: Tensor, vocab_limit: int) -> Tensor:
    """Last-position logits (B, V) in float32, ids past the tokenizer's masked."""
    last = logits[:, -1, :].float()
    if last.shape[-1] > vocab_limit:
        last[:, vocab_limit:] = float("-inf")
    return last


class Decoder:
    """Feeds a growing batch of sequences to the model: a prefill, then one token
    per row per step from the key/value cache, or the sliding window once a row
    outgrows the context.

    ``ids``/``mask`` (B, L) hold every row's tokens, left-padded (the window's
    input, and what beam search reads its candidates from).

    ``compiled``: decoding steps run through :mod:`gptkit.core.compiled` on a
    static cache of the whole context (one shape for every generation, so the
    step compiles once per model and batch size).
    """

    def __init__(
        self,
        model: GPTModel,
        rows: list[list[int]],
        max_new_tokens: int,
        *,
        static: bool = False,
        compiled: bool = False,
    ) -> None:
        self.model = model
        self.ctx = model.cfg.context_length
        self.compiled = compiled
        static = static or compiled
        device = next(model.parameters()).device
        self.lengths = [len(r) for r in rows]
        self.ids, self.mask = _left_pad(rows, device)  # (B, P)
        capacity = min(max(self.lengths) + max_new_tokens, self.ctx)
        if compiled:
            capacity = self.ctx
        dtype = next(model.parameters()).dtype
        self.cache: KVCache | None = KVCache.allocate(
            model.cfg, len(rows), capacity, device, dtype, static=static
        )

    def prefill(self) -> Tensor:
        """Logits (B, 1, V) after each row's prompt (NaN logits, which only
        broken weights give, are refused here, once per generation)."""
        assert self.cache is not None
        rows, n = len(self.lengths), self.lengths[0]
        same = len(set(self.lengths)) == 1
        if rows > 1 and same and bool((self.ids == self.ids[:1]).all()):
            # One prompt for every row (beam search): prefill it once, copy its slots.
            one = self.model(
                self.ids[:1], cache=self.cache.rows(0), logits_at=self._last()[:1]
            )
            for store in (self.cache.keys, self.cache.values):
                store[:, 1:, :n] = store[:, :1, :n]
            self.cache.lengths, self.cache.shared = [n] * rows, n
            logits = one.expand(rows, *one.shape[1:]).contiguous()  # rows' own
        elif same:
            logits = self.model(self.ids, cache=self.cache, logits_at=self._last())
        else:
            # Right-pad for the prefill: row b's tokens sit at positions 0..len-1.
            right = torch.zeros_like(self.ids)
            for b, n in enumerate(self.lengths):
                right[b, :n] = self.ids[b, self.ids.shape[1] - n :]
            logits = self.model(right, cache=self.cache, logits_at=self._last())
            for b, n in enumerate(self.lengths):  # the padding's slots are free
                self.cache.set_length(b, n)
        if bool(torch.isnan(logits).any()):
            raise GptkitError(
                "the model's output is NaN: its weights hold NaN or inf values"
                " (a diverged or damaged checkpoint); generation needs finite"
                " weights"
            )
        return logits

    def _last(self) -> Tensor:
        return torch.tensor([n - 1 for n in self.lengths], device=self.ids.device)

    def step(self, next_ids: Tensor) -> Tensor:
        """Append ``next_ids`` (B,) and return the logits (B, 1, V) after them."""
        self.ids = torch.cat([self.ids, next_ids[:, None]], dim=1)
        self.mask = torch.cat([self.mask, torch.ones_like(self.mask[:, :1])], dim=1)
        self.lengths = [n + 1 for n in self.lengths]
        if self.cache is not None and self.cache.length < self.cache.capacity:
            if self.compiled:
                from gptkit.core.compiled import run_step

                return run_step(self.model, self.cache, next_ids[:, None])
            return self.model(next_ids[:, None], cache=self.cache)
        # Past the context length: slide the window and recompute it.
        self.cache = None
        ids, mask = self.ids[:, -self.ctx :], self.mask[:, -self.ctx :]
        padded = not bool(mask.all())
        return self.model(
            ids,
            position_ids=_positions(mask) if padded else None,
            attention_mask=mask if padded else None,
        )[:, -1:]

    def reorder(self, index: Tensor, start: int = 0) -> None:
        """Row i continues old row ``index[i]`` (beam search; ``start``: see
        :meth:`KVCache.reorder`)."""
        self.ids = self.ids[index]
        self.mask = self.mask[index]
        order = index.tolist()
        self.lengths = [self.lengths[i] for i in order]
        if self.cache is not None:
            self.cache.reorder(index, start)


def generate_tokens(
    model: GPTModel,
    prompts: Sequence[Sequence[int]],
    sampler: Sampler | SearchStrategy,
    **settings: Any,
) -> list[Generated]:
    """Generate up to ``max_new_tokens`` for each prompt (a batch); the keyword
    settings are :func:`iter_tokens`'."""
    results: list[Generated] = []
    for results in iter_tokens(model, prompts, sampler, **settings):  # noqa: B007
        pass
    return results


@torch.inference_mode()
def iter_tokens(
    model: GPTModel,
    prompts: Sequence[Sequence[int]],
    sampler: Sampler | SearchStrategy,
    *,
    max_new_tokens: int,
    eos_id: int | Sequence[int] | None = EOT_ID,
    stop: Callable[[int, list[int]], bool] | None = None,
    generator: torch.Generator | None = None,
    truncate: bool = True,
    on_token: TokenCallback | None = None,
    vocab_limit: int = N_VOCAB,
    repetition_penalty: float = 1.0,
    no_repeat_ngram_size: int = 0,
    compiled: bool = False,
    on_step: Callable[[], None] | None = None,
    tokenizer: Any = None,
) -> Iterator[list[Generated]]:
    """Generate step by step: yields the results (one per prompt, growing) after
    every decoding step, so that a caller can stream or stop early (closing the
    iterator ends the generation). A search strategy yields once, at the end.

    :param eos_id: the id (or ids) that end a row; None: none do.
    :param stop: ``stop(row, new_ids)`` returning True ends that row (stop strings).
    :param on_token: called with (row, token id) for every new token.
    :param vocab_limit: ids at or above it are never produced (padded vocabularies).
    :param repetition_penalty: > 1 discourages tokens already in the sequence.
    :param no_repeat_ngram_size: n > 0 forbids repeating any n-gram.
    :param compiled: run the decoding steps compiled (:mod:`gptkit.core.compiled`).
    :param on_step: called after every decoding step (progress).
    """
    if repetition_penalty <= 0:
        raise GptkitError(f"repetition_penalty must be > 0, got {repetition_penalty}")
    if no_repeat_ngram_size < 0:
        raise GptkitError("no_repeat_ngram_size must be >= 0")
    ctx = model.cfg.context_length
    eos_ids = _eos_ids(eos_id)
    start = eos_ids[0] if eos_ids else EOT_ID
    request = GenerationRequest(
        prompts=[prepare_prompt(p, ctx, truncate, start) for p in prompts],
        max_new_tokens=max_new_tokens,
        eos_id=eos_ids[0] if eos_ids else None,
        eos_ids=eos_ids,
        stop=stop,
        generator=generator,
        on_token=on_token,
        vocab_limit=min(vocab_limit, model.cfg.vocab_size),
        repetition_penalty=repetition_penalty,
        no_repeat_ngram_size=no_repeat_ngram_size,
        compiled=compiled,
        on_step=on_step,
        tokenizer=tokenizer,
    )
    was_training = model.training
    model.eval()
    try:
        if isinstance(sampler, SearchStrategy):
            yield sampler.generate(model, request)
        else:
            yield from _sample_steps(model, sampler, request)
    finally:
        model.train(was_training)


def _sample_steps(
    model: GPTModel, sampler: Sampler, req: GenerationRequest
) -> Iterator[list[Generated]]:
    """The decode loop of every per-token sampler; yields after each step."""
    results = [
        Generated(prompt_ids=r, prompt_index=i) for i, r in enumerate(req.prompts)
    ]
    if req.max_new_tokens <= 0:
        yield results
        return
    decoder = Decoder(model, req.prompts, req.max_new_tokens, compiled=req.compiled)
    penalties = req.penalties(req.prompts, model.cfg.vocab_size, decoder.ids.device)
    running = torch.ones(len(results), dtype=torch.bool)
    sampler.start(len(results))
    logits = decoder.prefill()
    for step in range(req.max_new_tokens):
        last = penalties.apply(next_token_logits(logits, req.vocab_limit))
        next_ids = sampler.sample(last, req.generator)  # (B,)
        tokens = next_ids.tolist()
        penalties.update(tokens)
        for row in running.nonzero().flatten().tolist():
            token = tokens[row]
            result = results[row]
            result.new_ids.append(token)
            if req.on_token is not None:
                req.on_token(row, token)
            if req.is_eos(token):
                result.finish_reason = "eos"
                running[row] = False
            elif req.stop is not None and req.stop(row, result.new_ids):
                result.finish_reason = "stop"
                running[row] = False
        req.step_done()
        yield results
        if not running.any() or step == req.max_new_tokens - 1:
            break
        logits = decoder.step(next_ids)
