"""Server-sent events and OpenAI's legacy ``logprobs`` object."""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

if TYPE_CHECKING:
    from gptkit.serve.engine.requests import TokenLogprob
    from gptkit.serve.state import ServeState


def sse(body: Any) -> bytes:
    """One server-sent event carrying ``body`` as JSON."""
    data = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    return f"data: {data}\n\n".encode()


class EventStreamResponse(StreamingResponse):
    """A ``text/event-stream`` response that notices a client disconnect while
    it waits for the next event (whatever the server's ASGI version), stops the
    stream and calls ``on_disconnect``."""

    media_type = "text/event-stream"

    def __init__(
        self, content: AsyncIterable[bytes], on_disconnect: Callable[[], None]
    ) -> None:
        super().__init__(
            content,
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        self.on_disconnect = on_disconnect

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with anyio.create_task_group() as group:

            async def run(work: Callable[[], Any]) -> None:
                try:
                    await work()
                except OSError:  # the client went away mid-write
                    pass
                group.cancel_scope.cancel()

            group.start_soon(run, partial(self.stream_response, send))
            await run(partial(self._until_disconnect, receive))

    async def _until_disconnect(self, receive: Receive) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.on_disconnect()
                return


def token_text(state: ServeState, token: int) -> str:
    """A token as OpenAI shows it: its text, or ``bytes:\\xNN`` when its bytes
    are not a whole UTF-8 character."""
    raw = state.token_bytes(token)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return "bytes:" + "".join(f"\\x{b:02x}" for b in raw)


def format_logprobs(
    state: ServeState, entries: list[TokenLogprob]
) -> dict[str, list[Any]]:
    """``{tokens, token_logprobs, top_logprobs, text_offset}`` of some tokens."""
    tokens, logprobs, tops, offsets = [], [], [], []
    offset = 0
    for entry in entries:
        text = token_text(state, entry.token_id)
        tokens.append(text)
        logprobs.append(entry.logprob)
        tops.append(
            {token_text(state, t): lp for t, lp in entry.top}
            if entry.logprob is not None
            else None
        )
        offsets.append(offset)
        offset += len(text)
    return {
        "tokens": tokens,
        "token_logprobs": logprobs,
        "top_logprobs": tops,
        "text_offset": offsets,
    }
