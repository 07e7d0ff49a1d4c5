"""Continuous batching: many generation requests share one decode loop.

One background thread owns the model and a key/value cache of
``max_batch_size`` rows (one row per sequence, each at its own position). Each
iteration of its loop:

1. drops requests that were cancelled or ran past their deadline (their rows
   are free at once);
2. admits the oldest waiting requests whose ``n`` rows fit and prefills their
   prompts into free rows: short prompts together, right-padded, in one forward
   pass (up to ``prefill_chunk`` tokens with the padding), a long prompt alone,
   ``prefill_chunk`` tokens per iteration so that it does not stall the rows
   already decoding; a prompt's keys and values are then copied to the
   request's other rows;
3. runs one decode step for every decoding row together (one forward pass: the
   weights are read once for the whole batch) and samples each row's next
   token with the request's own sampler, penalties and ``torch.Generator``
   (:mod:`gptkit.serve.engine.rows`).

A row leaves the batch as soon as its sequence ends (end-of-text, a stop
string, ``max_new_tokens``); the last row moves into its slot, so the decoding
rows are always the first ``d`` of the cache and a step computes nothing for
empty rows. Because every row samples from its own generator, a seeded request
draws the same tokens whatever else is in the batch: choice ``i`` of a request
with seed ``s`` is what ``generate_text(..., seed=s + i)`` gives for that
prompt alone (bit for bit when it runs alone; with other rows in the step, up
to the floating-point differences between batch shapes).

Search strategies (beam search) decide on whole sequences, not one token per
row, so they cannot join a shared step: they run one at a time on a second
thread through :func:`gptkit.core.generate.generate_tokens`, beside the batch,
and return their sequences at the end (no streaming; a cancel or a timeout
discards the result when the search returns).

Results travel as events (:class:`Delta`, :class:`Finished`, :class:`Done`)
through a callback given to :meth:`BatchingEngine.submit` and called on the
engine's thread; without one, :meth:`RequestHandle.events` yields them.
"""

from __future__ import annotations

import copy
import logging
import math
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from gptkit.api.text import TextStream, completion_text
from gptkit.core.generate import next_token_logits, prepare_prompt
from gptkit.core.interfaces import Sampler, SearchStrategy
from gptkit.core.model import GPTModel, KVCache
from gptkit.core.tokenizer import EOT_ID, Tokenizer, gpt2_tokenizer
from gptkit.errors import GptkitError
from gptkit.serve.engine.requests import (
    BatchRequest,
    Delta,
    Done,
    EngineClosed,
    EventCallback,
    Finished,
    QueueFull,
    RequestHandle,
    TokenLogprob,
)
from gptkit.serve.engine.rows import Row, RowSampling, token_logprob

__all__ = [
    "BatchRequest",
    "BatchingEngine",
    "Delta",
    "Done",
    "EngineClosed",
    "Finished",
    "QueueFull",
    "RequestHandle",
    "TokenLogprob",
]


log = logging.getLogger("gptkit.batching")

#: The largest seed a ``torch.Generator`` takes (an unsigned 64-bit integer).
MAX_SEED = 2**64 - 1


@dataclass
class _Prefill:
    """Admitted requests whose prompts are being written into the cache, one
    slot each from ``slot`` on: short prompts together in one right-padded
    forward pass, or a single long prompt ``prefill_chunk`` tokens at a time
    (``done`` of them so far)."""

    handles: list[RequestHandle]
    slot: int
    done: int = 0


class BatchingEngine:
    """The continuous-batching scheduler around one model (see the module docs).

    ``max_seq_len`` caps prompt + new tokens of a sequence (the cache's length
    per row; default and at most the model's context length): the cache holds
    ``max_batch_size x max_seq_len`` positions of keys and values per layer.
    ``max_queue`` bounds the requests waiting for rows.
    """

    def __init__(
        self,
        model: GPTModel,
        *,
        max_batch_size: int = 16,
        max_queue: int = 64,
        max_seq_len: int | None = None,
        prefill_chunk: int = 256,
        eos_id: int | None = None,
        vocab_limit: int | None = None,
        tokenizer: Tokenizer | None = None,
    ) -> None:
        if max_batch_size < 1 or max_queue < 0 or prefill_chunk < 1:
            raise GptkitError(
                "max_batch_size and prefill_chunk must be >= 1, max_queue >= 0"
            )
        self.model = model.eval()
        self.ctx = model.cfg.context_length
        self.max_seq_len = min(max_seq_len or self.ctx, self.ctx)
        self.max_batch_size = max_batch_size
        self.max_queue = max_queue
        self.prefill_chunk = prefill_chunk
        #: Decodes the rows' text; its end-of-sequence ids end a row.
        self.tokenizer = tokenizer or gpt2_tokenizer()
        eos = self.tokenizer.eos_ids if eos_id is None else (eos_id,)
        self.eos_ids: tuple[int, ...] = tuple(eos)
        self.eos_id = self.eos_ids[0] if self.eos_ids else EOT_ID
        limit = self.tokenizer.vocab_limit(model.cfg.vocab_size)
        self.vocab_limit = min(vocab_limit or limit, model.cfg.vocab_size)
        param = next(model.parameters())
        self.device = param.device
        self.cache = KVCache.allocate(
            model.cfg, max_batch_size, self.max_seq_len, self.device, param.dtype
        )
        self.rows: list[Row] = []  # the decoding rows: cache slots 0 .. d-1
        self.prefill: _Prefill | None = None
        self.waiting: deque[RequestHandle] = deque()
        self.searches: deque[RequestHandle] = deque()
        self.searching = 0
        self.steps = 0  # decode steps run
        self._wake = threading.Condition()
        self._closing = False
        self._abort = False
        self._threads: list[threading.Thread] = []

    # -- the caller's side (any thread) ------------------------------------------

    def start(self) -> BatchingEngine:
        """Start the batch thread and the search thread."""
        for target, name in ((self._run, "batch"), (self._run_searches, "search")):
            thread = threading.Thread(target=target, name=f"gptkit-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def check(self, request: BatchRequest) -> list[int]:
        """Validate a request; its prepared prompt (raises GptkitError).

        Everything a request could get wrong is refused here, before it is
        queued: once admitted, a request shares forward passes with others,
        and nothing about it may fail them (token ids past the vocabulary, a
        seed a generator cannot take, a search wider than the batch)."""
        if not request.prompt_ids and self.eos_id >= self.vocab_limit:
            raise GptkitError(
                f"an empty prompt starts from end-of-text (id {self.eos_id}), which"
                f" this model's vocabulary of {self.vocab_limit} lacks"
            )
        prompt = prepare_prompt(request.prompt_ids, self.ctx, truncate=False)
        bad = next((i for i in prompt if not 0 <= i < self.vocab_limit), None)
        if bad is not None:
            raise GptkitError(
                f"the prompt has token id {bad}, outside this model's vocabulary"
                f" (ids 0 to {self.vocab_limit - 1})"
            )
        if request.max_new_tokens < 1:
            raise GptkitError("max_new_tokens must be >= 1")
        if len(prompt) + request.max_new_tokens > self.max_seq_len:
            raise GptkitError(
                f"the prompt's {len(prompt)} tokens plus {request.max_new_tokens}"
                f" new tokens exceed the {self.max_seq_len} tokens a sequence may"
                " hold"
            )
        if not 1 <= request.n <= self.max_batch_size:
            raise GptkitError(f"n must be between 1 and {self.max_batch_size}")
        if isinstance(request.sampler, SearchStrategy) and request.n != 1:
            raise GptkitError(
                "a search strategy returns its own sequences; n must be 1"
            )
        if request.logprobs is not None and not (
            0 <= request.logprobs <= self.vocab_limit
        ):
            raise GptkitError(f"logprobs must be between 0 and {self.vocab_limit}")
        if request.seed is not None and not (
            0 <= request.seed and request.seed + request.n - 1 <= MAX_SEED
        ):
            raise GptkitError(
                f"seed must be between 0 and {MAX_SEED - request.n + 1} (choice i"
                " uses seed + i)"
            )
        for token, bias in (request.logit_bias or {}).items():
            if not 0 <= token < self.vocab_limit:
                raise GptkitError(
                    f"logit_bias names token id {token}, outside this model's"
                    f" vocabulary (ids 0 to {self.vocab_limit - 1})"
                )
            if not math.isfinite(bias):
                raise GptkitError(f"logit_bias of token {token} is not finite")
        if isinstance(request.sampler, SearchStrategy):
            width = request.sampler.sequences()
            if width > self.max_batch_size:
                raise GptkitError(
                    f"the {request.sampler.name} search decodes {width} sequences"
                    f" together; this engine decodes at most {self.max_batch_size}"
                )
        return prompt

    def submit(
        self, request: BatchRequest, on_event: EventCallback | None = None
    ) -> RequestHandle:
        """Queue a request. Its events go to ``on_event`` (called on an engine
        thread: keep it short) or to :meth:`RequestHandle.events`. Raises
        :class:`QueueFull`, :class:`EngineClosed`, or GptkitError when invalid."""
        handle = RequestHandle(request, self.check(request), on_event)
        with self._wake:
            if self._closing:
                raise EngineClosed("the engine is shutting down")
            if self.queued >= self.max_queue:
                raise QueueFull(f"{self.max_queue} requests are already waiting")
            if isinstance(request.sampler, SearchStrategy):
                self.searches.append(handle)
            else:
                self.waiting.append(handle)
            self._wake.notify_all()
        return handle

    def cancel(self, handle: RequestHandle) -> None:
        """Cancel a request and wake the engine so its rows are freed now."""
        handle.cancel()
        with self._wake:
            self._wake.notify_all()

    @property
    def queued(self) -> int:
        """Requests waiting for rows (or for the search thread)."""
        return len(self.waiting) + len(self.searches)

    @property
    def running(self) -> int:
        """Rows generating: decoding, being prefilled, or searching."""
        prefilling = len(self.prefill.handles) if self.prefill is not None else 0
        return len(self.rows) + prefilling + self.searching

    @property
    def alive(self) -> bool:
        return bool(self._threads) and all(t.is_alive() for t in self._threads)

    def close(self, timeout: float | None = None) -> None:
        """Take nothing new, finish what is running or waiting, stop the
        threads; after ``timeout`` seconds the rest fails with ``"closed"``."""
        with self._wake:
            self._closing = True
            self._wake.notify_all()
        end = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            thread.join(None if end is None else max(0.0, end - time.monotonic()))
        if any(t.is_alive() for t in self._threads):
            with self._wake:
                self._abort = True
                self._wake.notify_all()
            for thread in self._threads:
                thread.join(30.0)

    # -- the batch thread --------------------------------------------------------

    def _idle(self) -> bool:
        return not self.rows and self.prefill is None and not self.waiting

    def _run(self) -> None:
        with torch.inference_mode():
            while True:
                with self._wake:
                    while self._idle() and not self._closing:
                        self._wake.wait()
                    if self._idle():
                        return
                try:
                    self._iteration()
                except Exception as exc:  # a bug: fail what is running, go on
                    log.exception("the batch loop failed")
                    handles = _handles(self.rows)
                    if self.prefill is not None:
                        handles += self.prefill.handles
                    self._remove_rows(list(self.rows))
                    self.prefill = None
                    self.cache.truncate([0] * self.max_batch_size)
                    for handle in handles:
                        handle.fail("internal", _describe(exc))

    def _iteration(self) -> None:
        self._expire()
        if self.prefill is None:
            self._admit()
        if self.prefill is not None:
            self._prefill_step()
        if self.rows:
            self._decode_step()

    def _why_stop(self, handle: RequestHandle) -> str | None:
        if self._abort:
            return "closed"
        if handle.cancelled:
            return "cancelled"
        if handle.deadline is not None and time.monotonic() > handle.deadline:
            return "timeout"
        return None

    def _expire(self) -> None:
        """Drop cancelled and timed-out requests wherever they are."""
        expired = []
        with self._wake:
            for handle in list(self.waiting):
                reason = self._why_stop(handle)
                if reason is not None:
                    self.waiting.remove(handle)
                    expired.append((handle, reason))
        for handle, reason in expired:
            handle.fail(reason)
        if self.prefill is not None:  # a long prompt, between its chunks
            [handle] = self.prefill.handles
            reason = self._why_stop(handle)
            if reason is not None:
                self._drop_prefill()
                handle.fail(reason)
        for handle in _handles(self.rows):
            reason = self._why_stop(handle)
            if reason is not None:
                self._remove_rows([r for r in self.rows if r.handle is handle])
                handle.fail(reason)

    def _admit(self) -> None:
        """Take the oldest waiting requests whose rows fit: as many short
        prompts as ``prefill_chunk`` padded tokens allow (a prefill reads the
        weights once for all of them), or one long prompt."""
        group: list[RequestHandle] = []
        rows, width = len(self.rows), 0
        with self._wake:
            while self.waiting:
                handle = self.waiting[0]
                length = len(handle.prompt)
                if rows + handle.request.n > self.max_batch_size:
                    break  # first come, first served: wait for rows to free up
                if group and (handle.solo or group[0].solo):
                    break
                if group and max(width, length) * (len(group) + 1) > self.prefill_chunk:
                    break
                group.append(self.waiting.popleft())
                rows += handle.request.n
                width = max(width, length)
                if length > self.prefill_chunk:
                    break  # a long prompt goes alone, in chunks
        if group:
            self.prefill = _Prefill(group, slot=len(self.rows))

    def _drop_prefill(self) -> None:
        job = self.prefill
        assert job is not None
        for j in range(len(job.handles)):
            self.cache.set_length(job.slot + j, 0)
        self.prefill = None

    def _prefill_step(self) -> None:
        """Feed the admitted prompts' next chunk (right-padded to one width);
        after the last, start their rows from the logits after each prompt."""
        job = self.prefill
        assert job is not None
        handles, k = job.handles, len(job.handles)
        lengths = [len(h.prompt) for h in handles]
        width = max(lengths)
        t = min(self.prefill_chunk, width - job.done)
        last = job.done + t == width
        ids = torch.zeros(k, t, dtype=torch.long)  # (k, t), padding after prompts
        for j, handle in enumerate(handles):
            piece = handle.prompt[job.done : job.done + t]
            ids[j, : len(piece)] = torch.tensor(piece)
        for j in range(k):
            self.cache.set_length(job.slot + j, job.done)
        sub = self.cache.rows(slice(job.slot, job.slot + k))
        at = torch.tensor([n - 1 - job.done if last else t - 1 for n in lengths])
        try:
            if any(h.request.prompt_logprobs for h in handles):
                logits = self.model(ids.to(self.device), cache=sub)  # (k, t, V)
                for j, handle in enumerate(handles):
                    if handle.request.prompt_logprobs:
                        mine = logits[j, : lengths[j] - job.done]  # (<= t, V)
                        self._score_prompt(handle, job.done, mine)
                logits = logits[torch.arange(k), at.to(self.device)][:, None]
            else:  # (k, 1, V): only the positions that will be sampled from
                logits = self.model(
                    ids.to(self.device), cache=sub, logits_at=at.to(self.device)
                )
            job.done += t
            for j, n in enumerate(lengths):
                self.cache.set_length(job.slot + j, min(n, job.done))
            if last:
                self._start_group(job, next_token_logits(logits, self.vocab_limit))
        except Exception as exc:  # these requests fail; the batch goes on
            if self.prefill is job:
                self._drop_prefill()
            if len(handles) > 1 and not any(r.handle in handles for r in self.rows):
                self._retry_alone(handles, exc)
                return
            for handle in handles:
                self._remove_rows([r for r in self.rows if r.handle is handle])
                self._internal(handle, exc)

    def _retry_alone(self, handles: list[RequestHandle], exc: Exception) -> None:
        """A prefill shared by several requests failed: each goes back to the
        front of the queue to be prefilled alone, so that only a request at
        fault fails (never the others admitted with it)."""
        log.warning(
            "a prefill of %d requests failed (%s); retrying each alone",
            len(handles),
            _describe(exc),
        )
        with self._wake:
            for handle in reversed(handles):
                handle.solo = True
                handle.prompt_logprobs = None
                self.waiting.appendleft(handle)

    def _score_prompt(self, handle: RequestHandle, start: int, logits: Tensor) -> None:
        """Log-probabilities of prompt tokens from a chunk's logits (T, V): the
        logits at position p score the token at p + 1; the first token has none."""
        prompt, k = handle.prompt, handle.request.logprobs or 0
        if handle.prompt_logprobs is None:
            handle.prompt_logprobs = [TokenLogprob(prompt[0], None)]
        logprobs = torch.log_softmax(logits.float(), dim=-1)  # (T, V)
        for i in range(logprobs.shape[0]):
            if start + i + 1 < len(prompt):
                token = prompt[start + i + 1]
                handle.prompt_logprobs.append(token_logprob(logprobs[i], token, k))

    def _start_group(self, job: _Prefill, first: Tensor) -> None:
        """Rows for every choice of the prefilled requests, from ``first``
        (k, V): the logits after each prompt. Request j's prompt sits in slot
        ``job.slot + j``; its choices need consecutive slots, so the prompts
        move up to their first slots (the last first: nothing is overwritten
        before it moved) and are copied to the others."""
        self.prefill = None
        bases, base = [], job.slot
        for handle in job.handles:
            bases.append(base)
            base += handle.request.n
        for j in reversed(range(len(job.handles))):
            if bases[j] != job.slot + j:
                length = len(job.handles[j].prompt)
                self._copy_slot(job.slot + j, bases[j], length)
        rows: list[Row] = []
        logits = []
        failed: list[tuple[RequestHandle, Exception]] = []
        for j, handle in enumerate(job.handles):
            try:
                new = self._new_rows(handle, bases[j])
            except Exception as exc:  # this request alone fails
                failed.append((handle, exc))
                new = [Row(handle, c, None, None) for c in range(handle.request.n)]  # type: ignore[arg-type]
            rows += new
            logits += [first[j]] * handle.request.n
        self.rows.extend(rows)  # slot order: rows[i] lives in slot i
        for handle, exc in failed:  # their slots are freed, the rest move up
            self._remove_rows([r for r in rows if r.handle is handle])
            self._internal(handle, exc)
        self._sample(rows, torch.stack(logits))  # (rows, V)

    def _new_rows(self, handle: RequestHandle, base: int) -> list[Row]:
        req = handle.request
        rows = []
        for choice in range(req.n):
            if choice:  # every choice starts from the prompt's keys and values
                self._copy_slot(base, base + choice, len(handle.prompt))
            sampler = req.sampler if req.n == 1 else copy.deepcopy(req.sampler)
            assert isinstance(sampler, Sampler)
            seed = req.seed + choice if req.seed is not None else secrets.randbits(63)
            generator = torch.Generator(self.device).manual_seed(seed)
            sampling = RowSampling(
                sampler,
                generator,
                req,
                handle.prompt,
                self.model.cfg.vocab_size,
                self.device,
            )
            eos = self.eos_ids if req.stop_at_eos else None
            stream = TextStream(req.stop_strings, eos, tokenizer=self.tokenizer)
            rows.append(Row(handle, choice, sampling, stream))
        return rows

    def _copy_slot(self, src: int, dst: int, length: int) -> None:
        keys, values = self.cache.keys, self.cache.values
        # (layers, rows, positions, heads, head_dim): one row's filled positions
        keys[:, dst, :length] = keys[:, src, :length]
        values[:, dst, :length] = values[:, src, :length]
        self.cache.set_length(dst, length)

    def _decode_step(self) -> None:
        count = len(self.rows)
        ids = torch.tensor([[r.last_token] for r in self.rows], device=self.device)
        sub = self.cache.rows(slice(0, count))
        try:
            logits = self.model(ids, cache=sub)  # (B, 1, V)
        except Exception as exc:  # the step failed for every row in it
            for handle in _handles(self.rows):
                self._remove_rows([r for r in self.rows if r.handle is handle])
                self._internal(handle, exc)
            return
        for slot in range(count):
            self.cache.set_length(slot, sub.lengths[slot])
        self.steps += 1
        self._sample(list(self.rows), next_token_logits(logits, self.vocab_limit))

    def _sample(self, rows: list[Row], logits: Tensor) -> None:
        """Each row's next token from its row of ``logits`` (B, V); rows that
        finish leave; a row whose sampler raises fails its request alone."""
        for i, row in enumerate(rows):
            handle = row.handle
            if handle.finished.is_set():
                continue

            try:
                token, logprob = row.sampling.next_token(logits[i : i + 1])
                reason = row.accept(token, logprob, self.eos_ids, _delta_to(handle))
            except Exception as exc:  # a plugin's sampler failed
                self._remove_rows([r for r in self.rows if r.handle is handle])
                self._internal(handle, exc)
                continue
            if reason is not None:
                self._remove_rows([row])
                handle.emit(Finished(row.choice, reason, row.generated))
                handle.rows_left -= 1
                if handle.rows_left == 0:
                    handle.emit(Done(len(handle.prompt), handle.prompt_logprobs))

    def _remove_rows(self, leaving: list[Row]) -> None:
        """Free the rows' slots; the last decoding rows move into the holes,
        and a prompt being prefilled moves up behind them."""
        for row in leaving:
            if row not in self.rows:
                continue
            slot, last = self.rows.index(row), len(self.rows) - 1
            if slot != last:
                self._copy_slot(last, slot, self.cache.lengths[last])
                self.rows[slot] = self.rows[last]
            self.rows.pop()
            self.cache.set_length(last, 0)
        job = self.prefill
        if job is not None and job.slot > len(self.rows):  # a chunked prompt
            self._copy_slot(job.slot, len(self.rows), job.done)
            self.cache.set_length(job.slot, 0)
            job.slot = len(self.rows)

    def _internal(self, handle: RequestHandle, exc: Exception) -> None:
        """A failure inside generation: log it, fail this request alone."""
        log.error("generation failed for one request", exc_info=exc)
        handle.fail("internal", _describe(exc))

    # -- the search thread -------------------------------------------------------

    def _run_searches(self) -> None:
        while True:
            with self._wake:
                while not self.searches and not self._closing:
                    self._wake.wait()
                if not self.searches:
                    return
                handle = self.searches.popleft()
                self.searching = 1
            try:
                self._search(handle)
            finally:
                self.searching = 0

    def _search(self, handle: RequestHandle) -> None:
        from gptkit.core.generate import generate_tokens

        req = handle.request
        reason = self._why_stop(handle)
        if reason is not None:
            handle.fail(reason)
            return

        def check_stop(*_: object) -> None:  # a timeout or cancel ends the search
            if self._why_stop(handle) is not None:
                raise _Stopped

        try:
            with torch.inference_mode():
                results = generate_tokens(
                    self.model,
                    [handle.prompt],
                    req.sampler,
                    max_new_tokens=req.max_new_tokens,
                    eos_id=self.eos_ids if req.stop_at_eos else None,
                    truncate=False,
                    vocab_limit=self.vocab_limit,
                    repetition_penalty=req.repetition_penalty,
                    no_repeat_ngram_size=req.no_repeat_ngram_size,
                    on_step=check_stop,
                    on_token=check_stop,
                )
        except _Stopped:
            handle.fail(self._why_stop(handle) or "cancelled")
            return
        except Exception as exc:
            self._internal(handle, exc)
            return
        reason = self._why_stop(handle)
        if reason is not None:
            handle.fail(reason)
            return
        eos = self.eos_ids if req.stop_at_eos else None
        for choice, result in enumerate(results):
            text, stopped = completion_text(
                result.new_ids, req.stop_strings, eos, self.tokenizer
            )
            ids = result.new_ids
            if result.finish_reason == "eos":
                ids = ids[:-1]
            finish = "stop" if result.finish_reason == "eos" or stopped else "length"
            handle.emit(Delta(choice, list(ids), text))
            handle.emit(Finished(choice, finish, len(result.new_ids), result.score))
        handle.emit(Done(len(handle.prompt)))


class _Stopped(Exception):
    """Raised in a search's callback to end it (timeout, cancel, shutdown)."""


def _handles(rows: list[Row]) -> list[RequestHandle]:
    """The distinct requests of ``rows``, in order."""
    return list({id(r.handle): r.handle for r in rows}.values())


def _delta_to(
    handle: RequestHandle,
) -> Callable[[int, list[int], str, list[TokenLogprob] | None], None]:
    """What :meth:`Row.accept` calls to report new output of ``handle``."""

    def emit(
        choice: int, ids: list[int], text: str, logprobs: list[TokenLogprob] | None
    ) -> None:
        handle.emit(Delta(choice, ids, text, logprobs))

    return emit


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
