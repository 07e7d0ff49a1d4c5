"""ASGI middleware: the request log and metrics, the API key, the body limit.

They are plain ASGI callables (no response buffering), so streamed responses
pass straight through.
"""

from __future__ import annotations

import hmac
import logging
import time
from datetime import datetime, timezone
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gptkit.serve.errors import APIError
from gptkit.serve.metrics import Metrics

log = logging.getLogger("gptkit.serve")

ROUTES = (
    "/v1/completions",
    "/v1/chat/completions",
    "/v1/models",
    "/health",
    "/metrics",
    "/openapi.json",
)


class RequestLog:
    """One log line per request (status, tokens, latency), and its metrics.

    The record carries the fields as ``row`` for the JSON formatter
    (``--log-json``). Never logs headers, bodies or prompts (the API key
    travels in a header).
    """

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.monotonic()
        status = 500
        state = scope.setdefault("state", {})

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        except Exception:  # answered with a 500 and logged by the app already
            pass
        finally:
            self._record(scope, state, status, time.monotonic() - start)

    def _record(
        self, scope: Scope, state: dict[str, Any], status: int, seconds: float
    ) -> None:
        path = scope["path"]
        route = path if path in ROUTES or path.startswith("/v1/models/") else "other"
        if route.startswith("/v1/models/"):
            route = "/v1/models/{id}"
        usage = state.get("usage") or {}
        self.metrics.observe_request(route, status, seconds, usage)
        if path in ("/health", "/metrics", "/openapi.json") and status == 200:
            return  # probes and scrapes would drown the log
        inflight = state.get("inflight")
        ttft = None
        if inflight is not None and inflight.first_token is not None:
            ttft = inflight.first_token - inflight.started
        client = scope.get("client")
        row = {
            "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
            "client": f"{client[0]}:{client[1]}" if client else None,
            "method": scope["method"],
            "path": path,
            "status": status,
            "prompt_tokens": usage.get("prompt_tokens"),
            "completion_tokens": usage.get("completion_tokens"),
            "ttft_s": None if ttft is None else round(ttft, 4),
            "latency_s": round(seconds, 4),
            "stream": state.get("stream"),
            "error": state.get("error"),
        }
        parts = [f'{row["client"]} "{row["method"]} {path}" {status}']
        if usage:
            parts.append(f"prompt={usage.get('prompt_tokens', 0)}")
            parts.append(f"completion={usage.get('completion_tokens', 0)}")
        if ttft is not None:
            parts.append(f"ttft={ttft:.3f}s")
        parts.append(f"latency={seconds:.3f}s")
        if row["stream"]:
            parts.append("stream")
        if row["error"]:
            parts.append(f"error={row['error']}")
        log.info(" ".join(parts), extra={"row": row})


class ApiKeyAuth:
    """``Authorization: Bearer KEY`` on every ``/v1`` route; the scheme's name
    in any case (RFC 7235: ``bearer KEY`` too); the comparison takes the same
    time wherever the keys differ (``hmac.compare_digest``)."""

    def __init__(self, app: ASGIApp, api_key: str | None) -> None:
        self.app = app
        self.expected = api_key.encode() if api_key else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            self.expected is not None
            and scope["type"] == "http"
            and scope["path"].startswith("/v1")
        ):
            given = dict(scope["headers"]).get(b"authorization")
            if given is None:
                error = APIError(
                    401,
                    "missing API key: send it as 'Authorization: Bearer KEY'",
                    code="invalid_api_key",
                )
                await error.response()(scope, receive, send)
                return
            scheme, _, token = given.partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(
                token.strip(b" "), self.expected
            ):
                error = APIError(401, "incorrect API key", code="invalid_api_key")
                await error.response()(scope, receive, send)
                return
        await self.app(scope, receive, send)


class BodyLimit:
    """Refuses a body over ``limit`` bytes with 413, by its Content-Length or,
    for a chunked body, as soon as the bytes read pass the limit."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    def _error(self) -> APIError:
        return APIError(
            413,
            f"the request body is larger than this server's limit of {self.limit}"
            " bytes",
            code="request_too_large",
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            await self._error().response()(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise self._error()
            return message

        await self.app(scope, counted, send)
