"""What the engine takes and gives: a request, the handle to follow it, and the
events it reports (new text, a finished choice, the end of the request)."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gptkit.errors import GptkitError

if TYPE_CHECKING:
    from gptkit.core.interfaces import Sampler, SearchStrategy

log = logging.getLogger("gptkit.batching")


@dataclass
class TokenLogprob:
    """A token, its log-probability and the most likely alternatives
    (``(token_id, logprob)``, most likely first)."""

    token_id: int
    logprob: float | None
    top: list[tuple[int, float]] = field(default_factory=list)


class QueueFull(GptkitError):
    """The engine's waiting queue is full; try again later."""


class EngineClosed(GptkitError):
    """The engine is shutting down and takes no new requests."""


@dataclass
class BatchRequest:
    """One generation request: a prompt, ``n`` continuations, their settings.

    ``logprobs``: ``None`` for none, else each token's log-probability plus the
    ``logprobs`` most likely alternatives (the model's raw distribution).
    ``prompt_logprobs``: score the prompt's tokens too. ``timeout``: seconds
    from submission, waiting included.
    """

    prompt_ids: Sequence[int]
    sampler: Sampler | SearchStrategy
    max_new_tokens: int
    n: int = 1
    seed: int | None = None
    stop_strings: Sequence[str] = ()
    stop_at_eos: bool = True
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    logit_bias: Mapping[int, float] | None = None
    logprobs: int | None = None
    prompt_logprobs: bool = False
    timeout: float | None = None


@dataclass
class Delta:
    """New output of choice ``choice``: token ids and the text they released."""

    choice: int
    token_ids: list[int]
    text: str
    logprobs: list[TokenLogprob] | None = None


@dataclass
class Finished:
    """Choice ``choice`` ended: ``reason`` is ``"stop"`` (end-of-text or a stop
    string) or ``"length"``; ``tokens`` counts every token generated."""

    choice: int
    reason: str
    tokens: int
    score: float | None = None


@dataclass
class Done:
    """The request is over: ``error`` is None, or ``"timeout"``,
    ``"cancelled"``, ``"closed"`` or ``"internal"`` with a ``message``."""

    prompt_tokens: int
    prompt_logprobs: list[TokenLogprob] | None = None
    error: str | None = None
    message: str = ""


Event = Delta | Finished | Done
EventCallback = Callable[[Event], None]

_MESSAGES = {
    "timeout": "the request ran past its timeout",
    "cancelled": "the request was cancelled",
    "closed": "the server shut down before the request finished",
}


class RequestHandle:
    """A submitted request: cancel it, or read its events."""

    def __init__(
        self, request: BatchRequest, prompt: list[int], on_event: EventCallback | None
    ) -> None:
        self.request = request
        self.prompt = prompt
        self.submitted = time.monotonic()
        self.deadline = (
            None if request.timeout is None else self.submitted + request.timeout
        )
        self.cancelled = False
        self.rows_left = request.n
        self.prompt_logprobs: list[TokenLogprob] | None = None
        self.finished = threading.Event()
        self._queue: queue.SimpleQueue[Event] | None = None
        if on_event is None:
            self._queue = queue.SimpleQueue()
            on_event = self._queue.put
        self._on_event = on_event

    def cancel(self) -> None:
        """Stop generating; the request's rows are freed at the next step."""
        self.cancelled = True

    def emit(self, event: Event) -> None:
        if self.finished.is_set():
            return
        if isinstance(event, Done):
            self.finished.set()
        try:
            self._on_event(event)
        except Exception:  # a consumer's failure must not stop the engine
            log.exception("a request's event callback failed")

    def fail(self, error: str, message: str = "") -> None:
        self.emit(Done(len(self.prompt), None, error, message or _MESSAGES[error]))

    def events(self) -> Iterator[Event]:
        """The events in order, ending with :class:`Done` (no callback given)."""
        if self._queue is None:
            raise RuntimeError("this request reports to its callback")
        while True:
            event = self._queue.get()
            yield event
            if isinstance(event, Done):
                return
