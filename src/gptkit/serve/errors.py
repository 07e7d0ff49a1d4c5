"""OpenAI's error object: ``{"error": {"message", "type", "param", "code"}}``.

Status codes and types follow OpenAI's API: 400 ``invalid_request_error`` for
a request that cannot be served as written, 401 for a missing or wrong API key,
404 for an unknown model or route, 413 for an over-large body, 503 when the
queue is full or the server is shutting down (with ``Retry-After``), 504 when
a request runs past its timeout, 500 ``server_error`` for a failure inside
generation.
"""

from __future__ import annotations

from starlette.responses import JSONResponse


class APIError(Exception):
    """An error answered with OpenAI's error object and ``status``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, object]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def bad_request(message: str, param: str | None = None, code: str | None = None):
    """A 400 ``invalid_request_error``."""
    return APIError(400, message, param=param, code=code)


def server_error(message: str) -> APIError:
    return APIError(500, message, type="server_error", code="internal_error")


def unavailable(message: str, retry_after: int) -> APIError:
    return APIError(
        503,
        message,
        type="server_error",
        code="server_overloaded",
        headers={"Retry-After": str(retry_after)},
    )


def timed_out(message: str) -> APIError:
    return APIError(504, message, type="timeout_error", code="request_timeout")
