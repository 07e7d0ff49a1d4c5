"""``POST /v1/completions``: OpenAI's completions API over the batching engine.

Each prompt of a request becomes one engine request with ``n`` choices; choice
``c`` of prompt ``p`` has index ``p * n + c`` in the response, as in OpenAI's
API. The engine runs on its own threads; its events cross into the event loop
through an :class:`asyncio.Queue` (``call_soon_threadsafe``). A client that
disconnects cancels its engine requests at once, streaming or not.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gptkit.api.serving import is_search_strategy
from gptkit.errors import GptkitError
from gptkit.serve.engine.batching import (
    BatchRequest,
    Delta,
    Done,
    EngineClosed,
    Finished,
    QueueFull,
    RequestHandle,
)
from gptkit.serve.errors import (
    APIError,
    bad_request,
    server_error,
    timed_out,
    unavailable,
)
from gptkit.serve.events import EventStreamResponse, format_logprobs, sse
from gptkit.serve.sampling import request_sampler
from gptkit.serve.schemas import CompletionRequest, parse_request

if TYPE_CHECKING:
    from gptkit.serve.state import ServeState


@dataclass
class _Choice:
    """What one choice has produced so far."""

    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[Any] = field(default_factory=list)
    finish_reason: str | None = None
    tokens: int = 0


class Inflight:
    """The engine requests of one HTTP request and the queue of their events."""

    def __init__(self, state: ServeState) -> None:
        self.state = state
        self.loop = asyncio.get_running_loop()
        self.events: asyncio.Queue[tuple[int, Any]] = asyncio.Queue()
        self.handles: list[RequestHandle] = []
        self.started = time.monotonic()
        self.first_token: float | None = None
        self.record: dict[str, Any] = {}

    def submit(self, requests: list[BatchRequest]) -> None:
        try:
            for index, request in enumerate(requests):
                self.handles.append(
                    self.state.engine.submit(request, self._callback(index))
                )
        except QueueFull:
            self.cancel()
            raise unavailable(
                "the server is busy: its request queue is full; retry later",
                self.state.settings.retry_after,
            ) from None
        except EngineClosed:
            self.cancel()
            raise unavailable("the server is shutting down", 5) from None
        except GptkitError as exc:
            self.cancel()
            raise bad_request(str(exc)) from None

    def _callback(self, index: int) -> Any:
        def on_event(event: Any) -> None:  # on an engine thread
            if not self.loop.is_closed():  # else the server has stopped
                self.loop.call_soon_threadsafe(self.events.put_nowait, (index, event))

        return on_event

    def cancel(self) -> None:
        for handle in self.handles:
            if not handle.finished.is_set():
                self.state.engine.cancel(handle)

    async def next(self) -> tuple[int, Any]:
        index, event = await self.events.get()
        if self.first_token is None and isinstance(event, Delta) and event.token_ids:
            self.first_token = time.monotonic()
            self.state.metrics.observe_ttft(self.first_token - self.started)
        return index, event


async def create_completion(request: Request) -> Response:
    state: ServeState = request.app.state.serve
    state.check_open()
    body = await request.body()
    # Parsing and tokenizing a large body takes a while: off the event loop,
    # so that other requests and /health are answered meanwhile.
    req, prepared = await anyio.to_thread.run_sync(_parse_and_prepare, state, body)
    inflight = Inflight(state)
    record = request.scope.setdefault("state", {})  # read by the request log
    record.update(inflight=inflight, stream=req.stream, usage=prepared.usage)
    inflight.record = record
    inflight.submit(prepared.requests)
    if req.stream:
        return EventStreamResponse(
            stream(state, req, prepared, inflight), on_disconnect=inflight.cancel
        )
    watcher = asyncio.create_task(_cancel_on_disconnect(request, inflight))
    try:
        body = await collect(state, req, prepared, inflight)
    finally:
        watcher.cancel()
        inflight.cancel()
    return JSONResponse(body)


async def _cancel_on_disconnect(request: Request, inflight: Inflight) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            inflight.cancel()
            return


def _parse_and_prepare(state: ServeState, body: bytes) -> tuple[Any, Prepared]:
    req = parse_request(CompletionRequest, body)
    return req, prepare(state, req)


@dataclass
class Prepared:
    """A validated request, ready for the engine."""

    requests: list[BatchRequest]
    prompts: list[list[int]]
    sampler: str
    id: str = field(default_factory=lambda: f"cmpl-{uuid.uuid4().hex}")
    created: int = field(default_factory=lambda: int(time.time()))
    usage: dict[str, int] = field(default_factory=dict)


def prepare(state: ServeState, req: CompletionRequest) -> Prepared:
    """Check the request against the model and build its engine requests."""
    if req.model != state.model_name:
        raise APIError(
            404,
            f"The model {req.model!r} does not exist; this server serves"
            f" {state.model_name!r}",
            param="model",
            code="model_not_found",
        )
    limits = state.limits
    if len(req.prompt) > limits.max_prompts:
        raise bad_request(
            f"too many prompts: {len(req.prompt)}; this server takes at most"
            f" {limits.max_prompts} in one request",
            "prompt",
            "too_many_prompts",
        )
    if req.suffix:
        raise bad_request("suffix is not supported by this model", "suffix")
    if req.n > state.engine.max_batch_size:
        raise bad_request(
            f"n is {req.n}; this server decodes at most"
            f" {state.engine.max_batch_size} sequences together",
            "n",
        )
    if req.best_of is not None and req.best_of != req.n:
        raise bad_request("best_of must equal n: candidates are not ranked", "best_of")
    choice = request_sampler(req, state.drafts)
    sampler, name, engine_options = choice.sampler, choice.name, choice.engine
    if not choice.streams and (req.stream or req.logprobs is not None):
        raise bad_request(
            f"sampler {name!r} decides on whole sequences: it cannot stream or"
            " return logprobs",
            "stream" if req.stream else "logprobs",
        )
    if not choice.streams and req.n != 1:
        raise bad_request(
            f"sampler {name!r} returns its own sequences (n must be 1; beam"
            " search: sampler_options.num_return_sequences)",
            "n",
        )
    width = req.n
    if is_search_strategy(sampler):
        width = sampler.sequences()
        if width > limits.max_beams:
            raise bad_request(
                f"sampler {name!r} decodes {width} sequences together; this server"
                f" decodes at most {limits.max_beams}",
                "sampler_options",
                "request_too_large",
            )
    prompts = [_prompt_ids(state, p) for p in req.prompt]
    bias = {int(k): v for k, v in (req.logit_bias or {}).items()}
    if any(token >= state.vocab_size for token in bias):
        raise bad_request(
            "logit_bias names a token id outside the vocabulary (ids 0 to"
            f" {state.vocab_size - 1})",
            "logit_bias",
        )
    lengths = [_max_tokens(state, req, ids) for ids in prompts]
    work = sum(width * (len(ids) + n) for ids, n in zip(prompts, lengths, strict=True))
    if work > limits.max_request_tokens:
        raise bad_request(
            f"the request asks for {work} tokens (over its {len(prompts) * width}"
            f" sequences, prompt + max_tokens each); this server takes at most"
            f" {limits.max_request_tokens} in one request: lower max_tokens, n or"
            " the number of prompts",
            "max_tokens",
            "request_too_large",
        )
    requests = []
    for ids, max_tokens in zip(prompts, lengths, strict=True):
        requests.append(
            BatchRequest(
                prompt_ids=ids,
                sampler=sampler,
                max_new_tokens=max_tokens,
                n=req.n,
                seed=req.seed,
                stop_strings=req.stop,
                stop_at_eos=not req.ignore_eos,
                frequency_penalty=req.frequency_penalty,
                presence_penalty=req.presence_penalty,
                logit_bias=bias or None,
                logprobs=req.logprobs,
                prompt_logprobs=req.echo and req.logprobs is not None,
                timeout=state.settings.request_timeout,
                **engine_options,
            )
        )
        if len(requests) > 1:
            requests[-1].sampler = _copy(sampler)
    return Prepared(requests, prompts, name)


def _copy(sampler: Any) -> Any:
    import copy

    return copy.deepcopy(sampler)


def _prompt_ids(state: ServeState, prompt: str | list[int]) -> list[int]:
    if isinstance(prompt, str):
        ids = state.encode(prompt)
    else:
        ids = list(prompt)
    ids = ids or [state.eos_id]  # an empty prompt starts from end-of-text
    bad = next((i for i in ids if i >= state.vocab_size), None)
    if bad is not None:
        raise bad_request(
            f"the prompt has token id {bad}, outside the vocabulary (ids 0"
            f" to {state.vocab_size - 1})",
            "prompt",
        )
    if len(ids) > state.max_seq_len - 1:
        raise bad_request(
            f"the prompt has {len(ids)} tokens; this server takes at most"
            f" {state.max_seq_len - 1} so that one can be generated",
            "prompt",
            "context_length_exceeded",
        )
    return ids


def _max_tokens(state: ServeState, req: CompletionRequest, ids: list[int]) -> int:
    room = state.max_seq_len - len(ids)
    if req.max_tokens is None:
        return room
    if req.max_tokens > room:
        raise bad_request(
            f"max_tokens {req.max_tokens} is too large: the prompt has {len(ids)}"
            f" tokens and a sequence holds at most {state.max_seq_len}, so at most"
            f" {room} can be generated",
            "max_tokens",
            "context_length_exceeded",
        )
    return req.max_tokens


def _error_of(done: Done) -> APIError:
    if done.error == "timeout":
        return timed_out(done.message)
    if done.error == "closed":
        return APIError(503, done.message, type="server_error", code="shutting_down")
    if done.error == "cancelled":
        return APIError(499, done.message, code="cancelled")
    return server_error(f"generation failed: {done.message}")


async def collect(
    state: ServeState, req: CompletionRequest, prepared: Prepared, inflight: Inflight
) -> dict[str, Any]:
    """Wait for every choice; the OpenAI response body."""
    n = req.n
    choices: dict[int, _Choice] = {}
    prompt_logprobs: dict[int, Any] = {}
    prompt_tokens, finished = 0, 0
    while finished < len(prepared.requests):
        index, event = await inflight.next()
        if isinstance(event, Delta):
            choice = choices.setdefault(index * n + event.choice, _Choice())
            choice.text += event.text
            choice.token_ids += event.token_ids
            choice.logprobs += event.logprobs or []
        elif isinstance(event, Finished):
            choice = choices.setdefault(index * n + event.choice, _Choice())
            choice.finish_reason, choice.tokens = event.reason, event.tokens
        elif isinstance(event, Done):
            if event.error is not None:
                inflight.cancel()
                raise _error_of(event)
            finished += 1
            prompt_tokens += event.prompt_tokens
            prompt_logprobs[index] = event.prompt_logprobs
    completion_tokens = sum(c.tokens for c in choices.values())
    prepared.usage.update(_usage(prompt_tokens, completion_tokens))
    body_choices = []
    for i in sorted(choices):
        c, p = choices[i], i // n
        text, logprobs = c.text, c.logprobs
        if req.echo:
            text = state.decode(prepared.prompts[p]) + text
            logprobs = (prompt_logprobs[p] or []) + logprobs
        body_choices.append(
            {
                "text": text,
                "index": i,
                "logprobs": format_logprobs(state, logprobs)
                if req.logprobs is not None
                else None,
                "finish_reason": c.finish_reason,
            }
        )
    return {
        "id": prepared.id,
        "object": "text_completion",
        "created": prepared.created,
        "model": state.model_name,
        "system_fingerprint": state.fingerprint,
        "choices": body_choices,
        "usage": dict(prepared.usage),
    }


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


class StreamFailed(Exception):
    """A request of a stream failed: ``error`` is the OpenAI error to send."""

    def __init__(self, error: APIError) -> None:
        super().__init__(error.body())
        self.error = error


async def stream_events(
    prepared: Prepared, inflight: Inflight
) -> AsyncIterator[tuple[int, Delta | Finished]]:
    """Each request's ``Delta`` and ``Finished`` events as they come, until
    every request is done; the usage is recorded in ``prepared.usage``. A
    failed request cancels the rest and raises :class:`StreamFailed`."""
    prompt_tokens = completion_tokens = finished = 0
    while finished < len(prepared.requests):
        index, event = await inflight.next()
        if isinstance(event, Done):
            if event.error is not None:
                inflight.cancel()
                error = _error_of(event)
                inflight.record["error"] = error.code or error.type
                raise StreamFailed(error)
            finished += 1
            prompt_tokens += event.prompt_tokens
            continue
        if isinstance(event, Finished):
            completion_tokens += event.tokens
        yield index, event
    prepared.usage.update(_usage(prompt_tokens, completion_tokens))


async def stream(
    state: ServeState, req: CompletionRequest, prepared: Prepared, inflight: Inflight
) -> AsyncIterator[bytes]:
    """Server-sent events: one chunk per new piece of a choice, then the
    finish reason, the usage (``stream_options.include_usage``), ``[DONE]``."""
    n = req.n

    def chunk(choices: list[dict[str, Any]], **extra: Any) -> bytes:
        return sse(
            {
                "id": prepared.id,
                "object": "text_completion",
                "created": prepared.created,
                "model": state.model_name,
                "system_fingerprint": state.fingerprint,
                "choices": choices,
                **extra,
            }
        )

    def piece(index: int, text: str, logprobs: Any, finish: str | None = None):
        lp = format_logprobs(state, logprobs) if req.logprobs is not None else None
        return {"index": index, "text": text, "logprobs": lp, "finish_reason": finish}

    echoed: set[int] = set()
    try:
        async for index, event in stream_events(prepared, inflight):
            i = index * n + event.choice
            if req.echo and i not in echoed:  # the prompt (scored in the prefill)
                echoed.add(i)
                scored = inflight.handles[index].prompt_logprobs or []
                text = state.decode(prepared.prompts[index])
                yield chunk([piece(i, text, scored)])
            if isinstance(event, Delta):
                if event.text or event.logprobs:
                    yield chunk([piece(i, event.text, event.logprobs or [])])
            else:
                yield chunk([piece(i, "", [], event.reason)])
        if req.stream_options is not None and req.stream_options.include_usage:
            yield chunk([], usage=dict(prepared.usage))
        yield b"data: [DONE]\n\n"
    except StreamFailed as failed:
        yield sse(failed.error.body())
    finally:
        inflight.cancel()
