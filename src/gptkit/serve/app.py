"""The Starlette application: routes, errors, middleware, engine lifetime."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from gptkit.serve.completions import create_completion
from gptkit.serve.engine.batching import BatchingEngine
from gptkit.serve.errors import APIError
from gptkit.serve.middleware import ApiKeyAuth, BodyLimit, RequestLog
from gptkit.serve.settings import ServeSettings
from gptkit.serve.state import ServeState

log = logging.getLogger("gptkit.serve")


async def health(request: Request) -> Response:
    state: ServeState = request.app.state.serve
    status = "ok"
    if state.draining:
        status = "draining"
    elif not state.engine.alive:
        status = "engine stopped"
    body = {
        "status": status,
        "model": state.model_name,
        "running": state.engine.running,
        "waiting": state.engine.queued,
    }
    return JSONResponse(body, status_code=200 if status == "ok" else 503)


def _model_card(state: ServeState) -> dict[str, Any]:
    return {
        "id": state.model_name,
        "object": "model",
        "created": state.created,
        "owned_by": "gptkit",
        "max_model_len": state.max_seq_len,
    }


async def list_models(request: Request) -> Response:
    state: ServeState = request.app.state.serve
    return JSONResponse({"object": "list", "data": [_model_card(state)]})


async def get_model(request: Request) -> Response:
    state: ServeState = request.app.state.serve
    name = request.path_params["model"]
    if name != state.model_name:
        raise APIError(
            404,
            f"The model {name!r} does not exist",
            param="model",
            code="model_not_found",
        )
    return JSONResponse(_model_card(state))


async def chat_completions(request: Request) -> Response:
    raise APIError(
        404,
        "chat completions are not served: GPT-2 is a base model with no chat"
        " template; send text to /v1/completions",
        code="unsupported_endpoint",
    )


async def metrics(request: Request) -> Response:
    state: ServeState = request.app.state.serve
    return Response(state.metrics.render(), media_type=state.metrics.content_type)


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, APIError)
    request.scope.setdefault("state", {})["error"] = exc.code or exc.type
    return exc.response()


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    messages = {404: "no such route", 405: "method not allowed on this route"}
    error = APIError(
        exc.status_code,
        f"{messages.get(exc.status_code, exc.detail)}: {request.method}"
        f" {request.url.path}",
        headers=dict(exc.headers or {}),
    )
    return error.response()


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error on %s", request.url.path)
    error = APIError(500, f"internal error: {type(exc).__name__}", type="server_error")
    return error.response()


def create_app(
    engine: BatchingEngine,
    settings: ServeSettings,
    model_name: str,
    api_key: str | None = None,
) -> ASGIApp:
    """The server's ASGI app; ``api_key``: required on ``/v1`` when given. The
    engine starts with the app and is closed (in-flight work finished, bounded
    by ``drain_timeout``) when it stops."""
    state = ServeState(engine, settings, model_name)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if not engine.alive:
            engine.start()
        yield
        state.draining = True
        await asyncio.to_thread(engine.close, settings.drain_timeout)

    app = Starlette(
        routes=[
            Route("/v1/completions", create_completion, methods=["POST"]),
            Route("/v1/models", list_models, methods=["GET"]),
            Route("/v1/models/{model:path}", get_model, methods=["GET"]),
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/health", health, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
        ],
        exception_handlers={
            APIError: _api_error,
            HTTPException: _http_error,
            Exception: _unexpected,
        },
        lifespan=lifespan,
    )
    app.state.serve = state
    wrapped: ASGIApp = BodyLimit(app, settings.max_body_bytes)
    wrapped = ApiKeyAuth(wrapped, api_key)
    outer = RequestLog(wrapped, state.metrics)
    outer.state = state  # type: ignore[attr-defined]
    return outer
