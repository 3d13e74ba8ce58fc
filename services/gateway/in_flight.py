"""At most so many requests in flight per server; the next one gets a 503 with Retry-After.

uvicorn's own `limit_concurrency` counts open connections (idle keep-alive ones too) and answers a
plain-text 503 no SDK can read. This counts requests between their head and the end of their
response, and answers in the caller's API shape: OpenAI's, or Anthropic's `overloaded_error` on
/v1/messages, which the SDKs retry after Retry-After. Per request it is one comparison and a counter;
it wraps neither `receive` nor `send`, so the streaming path is untouched.
"""

from __future__ import annotations

import logging
from http import HTTPStatus

from starlette.types import ASGIApp, Receive, Scope, Send

from services.gateway.errors import SERVER_ERROR, OpenAIError, dialect_of_path

IN_FLIGHT_RETRY_AFTER_S = 1
TOO_MANY_REQUESTS = "too_many_requests"

_logger = logging.getLogger("gateway.in_flight")


class InFlightLimit:
    """ASGI middleware: at most `limit` HTTP requests inside `app` at once."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit
        self.in_flight = 0
        self._saturated = False  # logged once per stretch at the limit, not once per refusal

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.limit:
            await self._refuse(scope, receive, send)
            return
        self._saturated = False
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._saturated:
            self._saturated = True
            _logger.warning("%d requests in flight: refusing more until one ends", self.in_flight)
        error = OpenAIError(
            HTTPStatus.SERVICE_UNAVAILABLE,
            f"The gateway is serving its limit of {self.limit} requests at once; "
            f"retry in {IN_FLIGHT_RETRY_AFTER_S} s.",
            code=TOO_MANY_REQUESTS,
            error_type=SERVER_ERROR,
            headers={"retry-after": str(IN_FLIGHT_RETRY_AFTER_S)},
        )
        # The request's body, if any, is left unread: uvicorn discards it.
        await error.response(dialect_of_path(scope["path"]))(scope, receive, send)
