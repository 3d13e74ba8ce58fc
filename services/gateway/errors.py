"""Errors in the caller's API shape, for every failure: OpenAI's `{"error": {"message", "type",
"code", "param"}}` (code always a string), or on the Anthropic paths (/v1/messages…) Anthropic's
`{"type": "error", "error": {"type", "message"}}`.

Clients (the openai and anthropic SDKs, LangChain, Claude Code, curl users) read the message from
the shape their API defines; a FastAPI-style `{"detail": ...}` or an HTML page would surface as an
unreadable exception on their side.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

INVALID_REQUEST = "invalid_request_error"
SERVER_ERROR = "server_error"


class ApiDialect(enum.Enum):
    """Whose API a path belongs to: errors go back in that API's shape."""

    OPENAI = "openai"
    ANTHROPIC = "anthropic"


def dialect_of_path(path: str) -> ApiDialect:
    """The API a request path belongs to, for errors raised before (or without) an Endpoint."""
    if path == "/v1/messages" or path.startswith("/v1/messages/"):
        return ApiDialect.ANTHROPIC
    return ApiDialect.OPENAI


# Anthropic's error types by HTTP status (docs.anthropic.com/en/api/errors); 503 is ours for "loading
# / no server right now", which its SDKs and Claude Code treat like its own 529 overloaded_error.
_ANTHROPIC_TYPES = {
    HTTPStatus.BAD_REQUEST: "invalid_request_error",
    HTTPStatus.UNAUTHORIZED: "authentication_error",
    HTTPStatus.FORBIDDEN: "permission_error",
    HTTPStatus.NOT_FOUND: "not_found_error",
    HTTPStatus.REQUEST_ENTITY_TOO_LARGE: "request_too_large",
    HTTPStatus.TOO_MANY_REQUESTS: "rate_limit_error",
    HTTPStatus.SERVICE_UNAVAILABLE: "overloaded_error",
}


def anthropic_error_type(status: int) -> str:
    if status in _ANTHROPIC_TYPES:
        return _ANTHROPIC_TYPES[HTTPStatus(status)]
    return "api_error" if status >= HTTPStatus.INTERNAL_SERVER_ERROR else "invalid_request_error"


def anthropic_error_payload(status: int, message: str) -> dict[str, object]:
    return {"type": "error", "error": {"type": anthropic_error_type(status), "message": message}}


class OpenAIError(Exception):
    """An error to send to the client as OpenAI-shaped JSON."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        error_type: str = INVALID_REQUEST,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.error_type = error_type
        self.param = param
        self.headers = dict(headers or {})

    def payload(self) -> dict[str, dict[str, str | None]]:
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }

    def body(self, dialect: ApiDialect = ApiDialect.OPENAI) -> bytes:
        if dialect is ApiDialect.ANTHROPIC:
            return json.dumps(anthropic_error_payload(self.status, self.message)).encode()
        return json.dumps(self.payload()).encode()

    def response(self, dialect: ApiDialect = ApiDialect.OPENAI) -> Response:
        return Response(self.body(dialect), self.status, self.headers, media_type="application/json")


def bad_request(message: str, code: str, param: str | None = None) -> OpenAIError:
    return OpenAIError(HTTPStatus.BAD_REQUEST, message, code=code, param=param)


async def _on_openai_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, OpenAIError)
    return exc.response(dialect_of_path(request.url.path))


async def _on_http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's own 404 (no route) and 405 (wrong method), reworded the way OpenAI does."""
    assert isinstance(exc, StarletteHTTPException)
    target = f"{request.method} {request.url.path}"
    if exc.status_code == HTTPStatus.NOT_FOUND:
        error = OpenAIError(exc.status_code, f"Unknown request URL: {target}.", code="unknown_url")
    elif exc.status_code == HTTPStatus.METHOD_NOT_ALLOWED:
        allowed = (exc.headers or {}).get("Allow", "")
        message = f"Method not allowed: {target}. Allowed: {allowed or 'none'}."
        error = OpenAIError(exc.status_code, message, code="method_not_allowed", headers=exc.headers)
    else:
        error_type = SERVER_ERROR if exc.status_code >= HTTPStatus.INTERNAL_SERVER_ERROR else INVALID_REQUEST
        error = OpenAIError(exc.status_code, str(exc.detail), error_type=error_type, headers=exc.headers)
    return error.response(dialect_of_path(request.url.path))


async def _on_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {}
    location = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
    message = f"Invalid request: {first.get('msg', 'malformed body')}" + (
        f" ({location})" if location else ""
    )
    error = bad_request(message, "invalid_request", location or None)
    return error.response(dialect_of_path(request.url.path))


async def _on_unexpected(request: Request, exc: Exception) -> Response:
    # A bug of ours. Starlette re-raises after this handler and uvicorn logs the traceback; here the
    # client just gets the same shape as any other error.
    error = OpenAIError(
        HTTPStatus.INTERNAL_SERVER_ERROR,
        "Internal gateway error.",
        code="internal_error",
        error_type=SERVER_ERROR,
    )
    return error.response(dialect_of_path(request.url.path))


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(OpenAIError, _on_openai_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_exception)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(Exception, _on_unexpected)
