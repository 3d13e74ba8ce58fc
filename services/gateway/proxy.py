"""Forwarding a request to a llama-server on 127.0.0.1 and relaying its answer.

Streaming answers (SSE) are relayed chunk by chunk as they arrive, never parsed or re-framed: the
gateway's cost per token is one read and one write. If the upstream dies mid-stream the client gets an
OpenAI-style error event and the stream ends, so a client never waits on a dead server.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from http import HTTPStatus

import anyio
import httpx
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from services.gateway.errors import SERVER_ERROR, OpenAIError
from services.gateway.routing import MODEL_LOADING_RETRY_AFTER_S, Route

UPSTREAM_CONNECT_TIMEOUT_S = 5.0
# Between two reads of a response: a long prompt on a CPU-only split model can take minutes before
# the first token, so this bounds a hung server rather than a slow one.
UPSTREAM_READ_TIMEOUT_S = 600.0
UPSTREAM_WRITE_TIMEOUT_S = 30.0
UPSTREAM_POOL_TIMEOUT_S = 30.0
UPSTREAM_MAX_CONNECTIONS = 256
UPSTREAM_MAX_KEEPALIVE = 64
UPSTREAM_KEEPALIVE_EXPIRY_S = 4.0  # below llama-server's (cpp-httplib) 5 s idle keep-alive
# A pooled keep-alive connection the server closed while idle fails on first use; a second attempt on
# a fresh connection is safe because llama-server did not start on the request.
UPSTREAM_SEND_ATTEMPTS = 2
UPSTREAM_UNREACHABLE_RETRY_AFTER_S = MODEL_LOADING_RETRY_AFTER_S

SSE_MEDIA_TYPE = "text/event-stream"
# Ask for the body as llama-server produced it: the raw bytes are relayed without decoding.
_UPSTREAM_HEADERS = {"content-type": "application/json", "accept-encoding": "identity"}
# Proxies in front of us (nginx) must not buffer the event stream either.
_SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}

_logger = logging.getLogger("gateway.proxy")


class UpstreamUnavailable(OpenAIError):
    """The llama-server did not accept the request (gone, restarting, or refusing connections)."""

    def __init__(self, route: Route, cause: Exception) -> None:
        super().__init__(
            HTTPStatus.SERVICE_UNAVAILABLE,
            f"The server for model '{route.model}' is not answering ({type(cause).__name__}); retry shortly.",
            code="upstream_unavailable",
            error_type=SERVER_ERROR,
            headers={"retry-after": str(UPSTREAM_UNREACHABLE_RETRY_AFTER_S)},
        )


def stream_error_event(message: str, code: str) -> bytes:
    """The SSE event that ends a broken stream; the openai SDK raises it as an APIError."""
    payload = {"error": {"message": message, "type": SERVER_ERROR, "param": None, "code": code}}
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


async def _relay(upstream: httpx.Response, model: str) -> AsyncIterator[bytes]:
    try:
        async for chunk in upstream.aiter_raw():
            yield chunk
    except httpx.HTTPError as exc:
        _logger.warning("upstream for %s broke mid-stream: %r", model, exc)
        yield stream_error_event(
            f"The server for model '{model}' stopped mid-response ({type(exc).__name__}).",
            "upstream_disconnected",
        )


class RelayedStream(StreamingResponse):
    """A StreamingResponse that always closes its upstream, also when the client goes away.

    Closing the upstream connection early is what stops llama-server generating for nobody.
    """

    def __init__(self, upstream: httpx.Response, model: str, on_close: Callable[[], None]) -> None:
        headers = {**_SSE_HEADERS}
        super().__init__(_relay(upstream, model), upstream.status_code, headers, media_type=SSE_MEDIA_TYPE)
        self._upstream = upstream
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            # Shielded: on a client disconnect this runs inside a cancelled scope.
            with anyio.CancelScope(shield=True):
                await self._upstream.aclose()
            self._on_close()


def _plain_response(upstream: httpx.Response, content: bytes) -> Response:
    media_type = upstream.headers.get("content-type", "application/json")
    return Response(content, upstream.status_code, media_type=media_type)


class UpstreamProxy:
    """One pooled HTTP client for all local llama-servers (keep-alive saves a connect per request)."""

    def __init__(self, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._client = httpx.AsyncClient(
            transport=transport,
            timeout=httpx.Timeout(
                connect=UPSTREAM_CONNECT_TIMEOUT_S,
                read=UPSTREAM_READ_TIMEOUT_S,
                write=UPSTREAM_WRITE_TIMEOUT_S,
                pool=UPSTREAM_POOL_TIMEOUT_S,
            ),
            limits=httpx.Limits(
                max_connections=UPSTREAM_MAX_CONNECTIONS,
                max_keepalive_connections=UPSTREAM_MAX_KEEPALIVE,
                keepalive_expiry=UPSTREAM_KEEPALIVE_EXPIRY_S,
            ),
            trust_env=False,  # a user's HTTP_PROXY must never capture loopback traffic
        )

    async def _send(self, route: Route, path: str, body: bytes) -> httpx.Response:
        request = self._client.build_request(
            "POST", route.base_url + path, content=body, headers=_UPSTREAM_HEADERS
        )
        for attempt in range(1, UPSTREAM_SEND_ATTEMPTS + 1):
            try:
                return await self._client.send(request, stream=True)
            except (httpx.ConnectError, httpx.RemoteProtocolError) as exc:
                if attempt == UPSTREAM_SEND_ATTEMPTS:
                    raise UpstreamUnavailable(route, exc) from exc
            except httpx.TimeoutException as exc:
                raise UpstreamUnavailable(route, exc) from exc
        raise AssertionError("unreachable: the loop returns or raises")

    async def forward(self, route: Route, path: str, body: bytes, on_close: Callable[[], None]) -> Response:
        """POST `body` to the route's server; `on_close` runs once the response is fully relayed."""
        try:
            upstream = await self._send(route, path, body)
        except BaseException:
            on_close()
            raise
        if upstream.headers.get("content-type", "").startswith(SSE_MEDIA_TYPE):
            return RelayedStream(upstream, route.model, on_close)
        try:
            content = await upstream.aread()
        except httpx.HTTPError as exc:
            raise UpstreamUnavailable(route, exc) from exc
        finally:
            await upstream.aclose()
            on_close()
        return _plain_response(upstream, content)

    async def aclose(self) -> None:
        await self._client.aclose()
