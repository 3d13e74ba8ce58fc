"""Forwarding a request to a llama-server on 127.0.0.1 and relaying its answer.

Streaming answers (SSE) are relayed chunk by chunk as they arrive, never parsed or re-framed: the
gateway's cost per token is one read and one write. If the upstream dies mid-stream the client gets an
OpenAI-style error event and the stream ends; if the client goes away the upstream exchange is
aborted, which is what stops llama-server generating for nobody.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from http import HTTPStatus

from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from services.gateway.body import Endpoint
from services.gateway.errors import SERVER_ERROR, ApiDialect, OpenAIError, anthropic_error_payload
from services.gateway.metrics_requests import RequestMetrics, RequestObservation, Served
from services.gateway.routing import MODEL_LOADING_RETRY_AFTER_S, Route
from services.gateway.upstream import UpstreamClosed, UpstreamError, UpstreamPool, UpstreamResponse
from services.gateway.upstream_errors import reword_upstream_error

UPSTREAM_UNREACHABLE_RETRY_AFTER_S = MODEL_LOADING_RETRY_AFTER_S
FORWARDED_HEADER_LINE = "X-Mesh-Llm-Forwarded: 1\r\n"
SSE_MEDIA_TYPE = "text/event-stream"
# Proxies in front of us (nginx) must not buffer the event stream either.
_SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}

_logger = logging.getLogger("gateway.proxy")


class UpstreamUnavailable(OpenAIError):
    """The llama-server did not answer the request (gone, restarting, or refusing connections)."""

    def __init__(self, route: Route, cause: Exception) -> None:
        super().__init__(
            HTTPStatus.SERVICE_UNAVAILABLE,
            f"The server for model '{route.model}' is not answering ({cause}); retry shortly.",
            code="upstream_unavailable",
            error_type=SERVER_ERROR,
            headers={"retry-after": str(UPSTREAM_UNREACHABLE_RETRY_AFTER_S)},
        )


def stream_error_event(message: str, code: str, dialect: ApiDialect = ApiDialect.OPENAI) -> bytes:
    """The SSE event that ends a broken stream; the openai SDK raises it as an APIError, the
    anthropic SDK an `error` event as its APIStatusError."""
    if dialect is ApiDialect.ANTHROPIC:
        data = json.dumps(anthropic_error_payload(HTTPStatus.INTERNAL_SERVER_ERROR, message)).encode()
        return b"event: error\ndata: " + data + b"\n\n"
    payload = {"error": {"message": message, "type": SERVER_ERROR, "param": None, "code": code}}
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


class RelayedStream(Response):
    """An event stream relayed from llama-server to the client as raw ASGI body messages."""

    def __init__(
        self,
        upstream: UpstreamResponse,
        model: str,
        on_close: Callable[[], None],
        dialect: ApiDialect = ApiDialect.OPENAI,
        observation: RequestObservation | None = None,
    ) -> None:
        self.status_code = upstream.status
        self.media_type = upstream.headers.get("content-type", SSE_MEDIA_TYPE)
        self.background = None
        self.init_headers(_SSE_HEADERS)
        self._upstream = upstream
        self._model = model
        self._on_close = on_close
        self._dialect = dialect
        self._client_gone = False
        self._observation = observation

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        watcher = asyncio.ensure_future(self._abort_when_client_leaves(receive))
        try:
            start = {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
            await send(start)
            await self._relay_body(send)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            watcher.cancel()
            self._upstream.close()
            self._on_close()

    async def _relay_body(self, send: Send) -> None:
        try:
            async for chunk in self._upstream.body_chunks():
                if self._observation is not None:
                    self._observation.chunk(chunk)  # two substring checks (metrics_requests.py)
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except UpstreamError as exc:
            if self._client_gone:
                return
            _logger.warning("upstream for %s broke mid-stream: %s", self._model, exc)
            message = f"The server for model '{self._model}' stopped mid-response ({exc})."
            await send(
                {
                    "type": "http.response.body",
                    "body": stream_error_event(message, "upstream_disconnected", self._dialect),
                    "more_body": True,
                }
            )

    async def _abort_when_client_leaves(self, receive: Receive) -> None:
        # The request body was read already, so the next message is the disconnect.
        message: Message = await receive()
        while message["type"] != "http.disconnect":
            message = await receive()
        self._client_gone = True
        self._upstream.abort(UpstreamClosed("the client went away"))


def _finishing(observation: RequestObservation, on_close: Callable[[], None]) -> Callable[[], None]:
    def closed() -> None:
        observation.finish()
        on_close()

    return closed


class UpstreamProxy:
    """Forwards API requests over one pool of keep-alive connections to the local llama-servers."""

    def __init__(self, metrics: RequestMetrics | None = None) -> None:
        self._pool = UpstreamPool()
        self._metrics = metrics

    async def forward(
        self,
        route: Route,
        endpoint: Endpoint,
        body: bytes,
        on_close: Callable[[], None],
        forwarded: bool = False,
    ) -> Response:
        """POST `body` to the route's server; `on_close` runs once the response is fully relayed.

        `forwarded` marks a request sent through a mesh tunnel to a peer's gateway (which takes the
        API's path, and must serve it locally and never forward it again); otherwise the route is a
        llama-server, which takes the endpoint's upstream path.
        """
        observation = None
        if self._metrics is not None:
            served = Served.FORWARDED if forwarded else Served.HERE
            observation = self._metrics.begin(route.model, endpoint.path, served)
            on_close = _finishing(observation, on_close)
        extra = FORWARDED_HEADER_LINE if forwarded else ""
        if route.api_key:  # a local llama-server (a peer's gateway is reached through the mesh)
            extra += f"Authorization: Bearer {route.api_key}\r\n"
        path = endpoint.path if forwarded else endpoint.upstream_path
        try:
            upstream = await self._pool.post(route.host, route.port, path, body, extra)
        except UpstreamError as exc:
            if observation is not None:
                observation.response(HTTPStatus.SERVICE_UNAVAILABLE)
            on_close()
            raise UpstreamUnavailable(route, exc) from exc
        except BaseException:
            on_close()
            raise
        if observation is not None:
            observation.response(upstream.status)
        content_type = upstream.headers.get("content-type", "application/json")
        if content_type.startswith(SSE_MEDIA_TYPE):
            return RelayedStream(upstream, route.model, on_close, endpoint.dialect, observation)
        try:
            content = await upstream.read()
            if observation is not None:
                observation.body(content)
        except UpstreamError as exc:
            if observation is not None:
                observation.response(HTTPStatus.SERVICE_UNAVAILABLE)
            raise UpstreamUnavailable(route, exc) from exc
        finally:
            upstream.close()
            on_close()
        if upstream.status >= HTTPStatus.BAD_REQUEST:
            content = reword_upstream_error(upstream.status, content, endpoint.dialect)
            content_type = "application/json"
        return Response(content, upstream.status, media_type=content_type)

    async def aclose(self) -> None:
        self._pool.close()
