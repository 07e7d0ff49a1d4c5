"""``GET /openapi.json``: an OpenAPI 3.1 description of what the server serves.

The schemas are generated from the pydantic models that validate requests and
shape responses (:mod:`gptkit.serve.schemas`); this module only says which
route takes and returns which model, and which error statuses a route may
answer (every error body is OpenAI's error object). Schemathesis fuzzes the
server from this description (tests/test_serve_openapi.py).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from gptkit.serve.schemas import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Completion,
    CompletionRequest,
    ErrorResponse,
    Health,
    Model,
    ModelList,
)

REF = "#/components/schemas/{model}"

#: What each error status means (OpenAI's statuses; 499 and 503/504 are the
#: server's own: a client gone, a full queue or shutdown, a request timeout).
ERRORS = {
    400: "the request cannot be served as written",
    401: "a missing or wrong API key (when the server requires one)",
    404: "an unknown model or route",
    405: "a method the route does not take",
    413: "a body over the server's limit",
    499: "the client closed the connection before the answer",
    500: "a failure inside generation (a sampler plugin's, say)",
    503: "the queue is full or the server is shutting down (Retry-After)",
    504: "the request ran past the server's request timeout",
}


def _event(chunk: type[BaseModel]) -> dict[str, Any]:
    """One server-sent event of a stream (OpenAPI 3.1: the schema of each
    event): its data is a ``chunk``, an error (ErrorResponse) or ``[DONE]``."""
    return {
        "type": "object",
        "properties": {
            "data": {
                "anyOf": [
                    {
                        "type": "string",
                        "contentMediaType": "application/json",
                        "contentSchema": {
                            "anyOf": [
                                {"$ref": REF.format(model=chunk.__name__)},
                                {"$ref": REF.format(model="ErrorResponse")},
                            ]
                        },
                    },
                    {"const": "[DONE]"},
                ],
                "description": f"a {chunk.__name__} or an ErrorResponse as JSON;"
                " the last event's data is [DONE]",
            }
        },
        "required": ["data"],
    }


def _json(model: type[BaseModel]) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": REF.format(model=model.__name__)}}}


def _errors(*statuses: int) -> dict[str, Any]:
    return {
        str(status): {"description": ERRORS[status], "content": _json(ErrorResponse)}
        for status in statuses
    }


def _v1(statuses: tuple[int, ...], auth: bool) -> tuple[int, ...]:
    return (401, *statuses) if auth else statuses


def openapi(model_name: str, auth: bool, version: str) -> dict[str, Any]:
    """The description of a server serving ``model_name``; ``auth``: whether
    ``/v1`` needs an API key."""
    requests = (CompletionRequest, ChatCompletionRequest)
    responses = (Completion, ChatCompletion, ChatCompletionChunk, ErrorResponse)
    _, defs = models_json_schema(
        [(m, "validation") for m in requests]
        + [(m, "serialization") for m in (*responses, Model, ModelList, Health)],
        ref_template=REF,
    )
    security = [{"bearer": []}] if auth else []
    completion_errors = _v1((400, 404, 413, 499, 500, 503, 504), auth)
    paths = {
        "/v1/completions": {
            "post": {
                "operationId": "createCompletion",
                "summary": "Complete prompts (OpenAI's completions API)",
                "security": security,
                "requestBody": {"required": True, "content": _json(CompletionRequest)},
                "responses": {
                    "200": {
                        "description": "the completion, or server-sent events of"
                        " its chunks with stream: true",
                        "content": {
                            **_json(Completion),
                            "text/event-stream": {"schema": _event(Completion)},
                        },
                    },
                    **_errors(*completion_errors),
                },
            }
        },
        "/v1/chat/completions": {
            "post": {
                "operationId": "createChatCompletion",
                "summary": "Answer a chat in the model's prompt style (OpenAI's chat"
                " completions API; a model without a recorded prompt style answers"
                " 400)",
                "security": security,
                "requestBody": {
                    "required": True,
                    "content": _json(ChatCompletionRequest),
                },
                "responses": {
                    "200": {
                        "description": "the chat completion, or server-sent events"
                        " of its chunks with stream: true",
                        "content": {
                            **_json(ChatCompletion),
                            "text/event-stream": {
                                "schema": _event(ChatCompletionChunk)
                            },
                        },
                    },
                    **_errors(*completion_errors),
                },
            }
        },
        "/v1/models": {
            "get": {
                "operationId": "listModels",
                "summary": "The model this server serves, with its limits",
                "security": security,
                "responses": {
                    "200": {"description": "the models", "content": _json(ModelList)},
                    **_errors(*_v1((), auth)),
                },
            }
        },
        "/v1/models/{model}": {
            "get": {
                "operationId": "retrieveModel",
                "summary": "One model, with its limits",
                "security": security,
                "parameters": [
                    {
                        "name": "model",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                        "example": model_name,
                    }
                ],
                "responses": {
                    "200": {"description": "the model", "content": _json(Model)},
                    **_errors(*_v1((404,), auth)),
                },
            }
        },
        "/health": {
            "get": {
                "operationId": "health",
                "summary": "Whether the server takes requests (no API key)",
                "responses": {
                    "200": {"description": "serving", "content": _json(Health)},
                    "503": {
                        "description": "draining or the engine has stopped",
                        "content": _json(Health),
                    },
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics (no API key)",
                "responses": {
                    "200": {
                        "description": "the metrics in Prometheus' text format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
    }
    schemas = defs["$defs"]
    # the one model this server serves (a fact of this server, not of the type)
    for request in requests:
        schemas[request.__name__]["properties"]["model"]["enum"] = [model_name]
    components: dict[str, Any] = {"schemas": schemas}
    if auth:
        components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "gptkit serve",
            "version": version,
            "description": "OpenAI's completions and chat completions APIs over"
            f" gptkit's continuous batching engine, serving {model_name!r}.",
        },
        "paths": paths,
        "components": components,
    }
