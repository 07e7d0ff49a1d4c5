"""``POST /v1/chat/completions``: OpenAI's chat API for a model whose run
records a prompt style (a model finetuned with ``gptkit finetune``).

The messages become one prompt in the model's style (``alpaca``: the book's
template, ending with an open ``### Response:``), which goes through the
completions path (:mod:`gptkit.serve.completions`: the same engine, samplers,
``n``, ``seed``, ``stop``, logprobs, streaming); the style's next-turn header
is one more stop string. A model without a prompt style answers 400.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gptkit.errors import GptkitError
from gptkit.serve.completions import (
    Inflight,
    Prepared,
    StreamFailed,
    _cancel_on_disconnect,
    collect,
    prepare,
    stream_events,
)
from gptkit.serve.engine.batching import Delta
from gptkit.serve.errors import APIError, bad_request
from gptkit.serve.events import EventStreamResponse, format_logprobs, sse
from gptkit.serve.schemas import (
    ChatCompletionRequest,
    ChatMessage,
    CompletionRequest,
    _as_api_error,
    parse_request,
)

__all__ = ["ChatCompletionRequest", "ChatMessage", "create_chat_completion"]

if TYPE_CHECKING:
    from gptkit.api.serving import PromptStyle
    from gptkit.serve.state import ServeState


def prompt_style(state: ServeState) -> PromptStyle:
    """The served model's prompt style, or a 400 saying it has none."""
    from gptkit.api.model import style_of

    style = style_of(state.engine.model)
    if style is None:
        raise APIError(
            400,
            f"the model {state.model_name!r} has no prompt style (it was not"
            " finetuned with gptkit finetune), so it cannot chat; send text to"
            " /v1/completions",
            code="no_prompt_style",
        )
    return style


def as_completion(req: ChatCompletionRequest, style: PromptStyle) -> CompletionRequest:
    """The completions request the chat request comes down to."""
    messages = [{"role": m.role, "content": m.content} for m in req.messages]
    try:
        prompt = style.chat_prompt(messages)
    except GptkitError as exc:
        raise bad_request(str(exc), "messages") from None
    stop = req.stop if isinstance(req.stop, list) else [req.stop] if req.stop else []
    body = req.model_dump(
        exclude={
            "messages", "max_completion_tokens", "logprobs", "top_logprobs", "stop",
        }
    )  # fmt: skip
    body.update(
        prompt=prompt,
        max_tokens=req.max_completion_tokens or req.max_tokens,
        stop=[*stop, *style.stop],
        logprobs=(req.top_logprobs or 0) if req.logprobs else None,
        stream_options=req.stream_options.model_dump() if req.stream_options else None,
    )
    try:
        return CompletionRequest.model_validate(body, strict=False)
    except ValidationError as exc:
        raise _as_api_error(exc) from None


def chat_logprobs(flat: dict[str, list[Any]]) -> dict[str, Any]:
    """OpenAI's chat logprobs (``{"content": [{token, logprob, bytes,
    top_logprobs}]}``) from the completions' ``format_logprobs``."""

    def entry(token: str, logprob: Any) -> dict[str, Any]:
        return {"token": token, "logprob": logprob, "bytes": list(token.encode())}

    content = []
    for token, logprob, top in zip(
        flat["tokens"], flat["token_logprobs"], flat["top_logprobs"], strict=True
    ):
        tops = [entry(t, lp) for t, lp in (top or {}).items()]
        content.append({**entry(token, logprob), "top_logprobs": tops})
    return {"content": content}


async def create_chat_completion(request: Request) -> Response:
    state: ServeState = request.app.state.serve
    state.check_open()
    req = parse_request(ChatCompletionRequest, await request.body())
    style = prompt_style(state)
    creq = as_completion(req, style)
    prepared = prepare(state, creq)
    prepared.id = f"chatcmpl-{uuid.uuid4().hex}"
    inflight = Inflight(state)
    record = request.scope.setdefault("state", {})
    record.update(inflight=inflight, stream=req.stream, usage=prepared.usage)
    inflight.record = record
    inflight.submit(prepared.requests)
    if req.stream:
        return EventStreamResponse(
            stream_chat(state, req, creq, prepared, inflight),
            on_disconnect=inflight.cancel,
        )
    watcher = asyncio.create_task(_cancel_on_disconnect(request, inflight))
    try:
        body = await collect(state, creq, prepared, inflight)
    finally:
        watcher.cancel()
        inflight.cancel()
    choices = []
    for choice in body["choices"]:
        logprobs = None
        if req.logprobs and choice["logprobs"] is not None:
            logprobs = chat_logprobs(choice["logprobs"])
        choices.append(
            {
                "index": choice["index"],
                "message": {
                    "role": "assistant",
                    "content": style.clean_response(choice["text"]),
                },
                "logprobs": logprobs,
                "finish_reason": choice["finish_reason"],
            }
        )
    body.update(object="chat.completion", choices=choices)
    return JSONResponse(body)


async def stream_chat(
    state: ServeState,
    req: ChatCompletionRequest,
    creq: CompletionRequest,
    prepared: Prepared,
    inflight: Inflight,
) -> AsyncIterator[bytes]:
    """``chat.completion.chunk`` events: the role, the pieces of each choice,
    its finish reason, the usage when asked, ``[DONE]``."""
    n = creq.n

    def chunk(choices: list[dict[str, Any]], **extra: Any) -> bytes:
        return sse(
            {
                "id": prepared.id,
                "object": "chat.completion.chunk",
                "created": prepared.created,
                "model": state.model_name,
                "system_fingerprint": state.fingerprint,
                "choices": choices,
                **extra,
            }
        )

    def piece(i: int, delta: dict[str, Any], logprobs: Any = None, finish=None):
        lp = None
        if req.logprobs and logprobs:
            lp = chat_logprobs(format_logprobs(state, logprobs))
        return {"index": i, "delta": delta, "logprobs": lp, "finish_reason": finish}

    started: set[int] = set()
    try:
        async for index, event in stream_events(prepared, inflight):
            i = index * n + event.choice
            if i not in started:
                started.add(i)
                yield chunk([piece(i, {"role": "assistant", "content": ""})])
            if isinstance(event, Delta):
                if event.text or event.logprobs:
                    delta = {"content": event.text}
                    yield chunk([piece(i, delta, event.logprobs or [])])
            else:
                yield chunk([piece(i, {}, None, event.reason)])
        if req.stream_options is not None and req.stream_options.include_usage:
            yield chunk([], usage=dict(prepared.usage))
        yield b"data: [DONE]\n\n"
    except StreamFailed as failed:
        yield sse(failed.error.body())
    finally:
        inflight.cancel()
