"""What one client connection may hold of the gateway's HTTP servers (API, console, mesh ingress).

uvicorn's httptools protocol on its own times nothing out until a request head is complete
(`timeout_keep_alive` runs only after a response), takes heads of any size and header count, and its
`limit_concurrency` counts open connections, idle ones too, answering a plain-text 503. So ~1,100
silent TCP connections used up the common 1024 descriptors and every new API and console connection
failed. (`h11_max_incomplete_event_size` is h11's; the gateway runs httptools, the faster parser.)
`GuardedHttpToolsProtocol`, a subclass of uvicorn's:

- closes a connection that has not sent a whole request head `header_timeout_s` after it opened or
  after its last response; bytes trickling in (slowloris) do not extend it;
- answers 408 and closes when a request body is not in `body_timeout_s` after its head;
- answers 431, in the caller's API shape, to a head over `max_head_bytes` or `max_headers`, and closes;
- keeps at most `max_open_connections` open: past that the connection that has waited longest for a
  request head (silent, slowloris, idle keep-alive) is closed to make room, so a flood of silent
  connections does not lock out a client that sends its request;
- aborts a connection whose client stops reading: when the response's bytes fill the kernel's and
  the transport's buffers (the client's receive window stays shut) for `write_stall_timeout_s`, the
  connection is dropped like one the client closed, instead of holding a request slot for ever;
- cancels the request's task when its client goes away before the response is complete, which
  aborts the upstream exchange (services/gateway/upstream.py) so llama-server stops generating for
  nobody: for non-streamed answers too, and through a mesh tunnel to a peer, whose gateway then
  does the same.

Nothing here runs per response chunk: writing the response (`send`) is uvicorn's own code. Per request
it costs a few counters per header and one timer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, ClassVar

from uvicorn._types import ASGIReceiveCallable, ASGISendCallable, Scope
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from services.gateway.errors import OpenAIError, dialect_of_path

# A head is a few hundred bytes sent at once; 10 s covers any link a person would use and frees a
# silent connection's descriptor quickly.
HEADER_TIMEOUT_S = 10.0
# The whole body after its head: MAX_REQUEST_BODY_BYTES (8 MiB) at ~140 KB/s.
REQUEST_BODY_TIMEOUT_S = 60.0
# A response nobody reads: the kernel buffers ~4 MB before the transport pauses, so a client stalled
# this long with all of that unread has stopped reading (a person's debugger pause is shorter).
WRITE_STALL_TIMEOUT_S = 60.0
# Request line + headers. nginx's default total (4 x 8 KiB); browsers send every cookie of
# `localhost` to every port, so a console next to other local web apps gets more than an SDK's ~1 KiB.
MAX_REQUEST_HEAD_BYTES = 32 * 1024
# gunicorn's default `limit_request_fields`; the SDKs send ~15, browsers ~20.
MAX_REQUEST_HEADERS = 100
# Per server, whatever the descriptor limit: an idle connection costs ~10 KB of Python objects.
MAX_OPEN_CONNECTIONS = 4096
MIN_OPEN_CONNECTIONS = 8
# Descriptors the gateway process needs besides its clients': gRPC channels, logs, the event loop and
# the listeners (measured 23 at idle), plus idle upstream connections (4 per llama-server).
PROCESS_FD_RESERVE = 64
# A client connection in flight holds its own socket and one to its llama-server or tunnel.
FDS_PER_CONNECTION = 2
# Per server. Bounds buffered request bodies (x 8 MiB) and upstream sockets; a node's llama-servers
# run a few requests at once each, so more in flight would only wait in their queues.
MAX_IN_FLIGHT_REQUESTS = 128
HEAD_TOO_LARGE = "request_header_fields_too_large"
BODY_TIMEOUT = "request_timeout"

_logger = logging.getLogger("gateway.connections")


@dataclass(frozen=True)
class ConnectionLimits:
    """The limits of one HTTP server; `for_open_files` sizes the connection counts to the process."""

    header_timeout_s: float = HEADER_TIMEOUT_S
    body_timeout_s: float = REQUEST_BODY_TIMEOUT_S
    write_stall_timeout_s: float = WRITE_STALL_TIMEOUT_S
    max_head_bytes: int = MAX_REQUEST_HEAD_BYTES
    max_headers: int = MAX_REQUEST_HEADERS
    max_open_connections: int = MAX_OPEN_CONNECTIONS
    max_in_flight: int = MAX_IN_FLIGHT_REQUESTS

    @classmethod
    def for_open_files(cls, open_files: int, servers: int) -> ConnectionLimits:
        """Limits for each of `servers` servers sharing a process allowed `open_files` descriptors.

        In flight at most half the connections: the other half can always be taken by clients
        waiting to send a request, so the 503 that answers them is the worst a client gets."""
        share = (open_files - PROCESS_FD_RESERVE) // (FDS_PER_CONNECTION * servers)
        connections = max(MIN_OPEN_CONNECTIONS, min(MAX_OPEN_CONNECTIONS, share))
        return cls(
            max_open_connections=connections, max_in_flight=min(MAX_IN_FLIGHT_REQUESTS, connections // 2)
        )


class RequestHeadRefused(Exception):
    """Raised from an httptools callback to stop parsing a head over a limit."""


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits above; `protocol_for` binds it to one server."""

    limits: ClassVar[ConnectionLimits] = ConnectionLimits()
    # This server's connections waiting for a request head, longest first (a dict as an ordered set).
    waiting: ClassVar[dict[GuardedHttpToolsProtocol, None]] = {}

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._app = self.app
        self.app = self._run_request
        self._deadline: asyncio.TimerHandle | None = None
        self._waiting_for_head = False
        self._unparsed_head_bytes = 0  # bytes received since the head began: catches a partial head
        self._head_bytes = 0  # what httptools parsed of it: catches a whole one arriving at once
        self._header_count = 0
        self._refusal: str | None = None
        self._request_task: asyncio.Task[Any] | None = None
        self._request_scope: Scope | None = None
        self._client_gone = False
        self._write_stall: asyncio.TimerHandle | None = None

    # -- the connection ----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._await_head()
        if len(self.connections) > self.limits.max_open_connections:
            self._make_room()

    def connection_lost(self, exc: Exception | None) -> None:
        self.waiting.pop(self, None)
        self._cancel_deadline()
        self._cancel_write_stall()
        cycle = self.cycle
        abandoned = cycle is not None and not cycle.response_complete and cycle.scope is self._request_scope
        super().connection_lost(exc)
        if abandoned and self._request_task is not None:
            self._client_gone = True
            self._request_task.cancel()

    def data_received(self, data: bytes) -> None:
        if self._waiting_for_head:
            self._unparsed_head_bytes += len(data)
        super().data_received(data)
        if self.transport.is_closing():
            return
        if self._waiting_for_head:
            if self._unparsed_head_bytes > self.limits.max_head_bytes:
                self._refuse_head(f"over {self.limits.max_head_bytes} bytes")
        elif self._deadline is None and self.cycle is not None and self.cycle.more_body:
            self._deadline = self.loop.call_later(self.limits.body_timeout_s, self._body_timed_out)

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._write_stall is None:
            self._write_stall = self.loop.call_later(self.limits.write_stall_timeout_s, self._write_stalled)

    def resume_writing(self) -> None:
        self._cancel_write_stall()
        super().resume_writing()

    # -- httptools callbacks -----------------------------------------------------------------
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = self._header_count = 0
        self._refusal = None

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        self._count_head(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        self._count_head(len(name) + len(value) + 4)  # ": " and CRLF
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._waiting_for_head = False
        self.waiting.pop(self, None)
        self._cancel_deadline()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._cancel_deadline()
        super().on_message_complete()
        if self.cycle is not None and self.cycle.response_complete and not self.pipeline:
            self._await_head()  # answered before the body was all in; now the next head is due

    def on_response_complete(self) -> None:
        super().on_response_complete()
        cycle = self.cycle
        idle = cycle is not None and cycle.response_complete and not cycle.more_body
        if idle and not self.transport.is_closing():
            self._await_head()

    def send_400_response(self, msg: str) -> None:
        if self._refusal is None:
            super().send_400_response(msg)
        else:  # our RequestHeadRefused, which uvicorn sees as a parser error
            self._refuse_head(self._refusal)

    # -- limits ------------------------------------------------------------------------------
    async def _run_request(self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        task = asyncio.current_task()
        self._request_task, self._request_scope = task, scope
        try:
            await self._app(scope, receive, send)
        except asyncio.CancelledError:
            if not self._client_gone or task is None:
                raise
            task.uncancel()  # cancelled by connection_lost: nobody is left to answer
        finally:
            if self._request_task is task:
                self._request_task = self._request_scope = None

    def _count_head(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > self.limits.max_head_bytes:
            self._refusal = f"over {self.limits.max_head_bytes} bytes"
        elif self._header_count > self.limits.max_headers:
            self._refusal = f"over {self.limits.max_headers} headers"
        if self._refusal is not None:
            raise RequestHeadRefused(self._refusal)

    def _await_head(self) -> None:
        self._waiting_for_head = True
        self._unparsed_head_bytes = 0
        self.waiting.pop(self, None)
        self.waiting[self] = None
        self._cancel_deadline()
        self._deadline = self.loop.call_later(self.limits.header_timeout_s, self._head_timed_out)

    def _make_room(self) -> None:
        """Close the connection that has waited longest for a head (this one if it is the only one)."""
        victim = next(iter(self.waiting), self)
        self.waiting.pop(victim, None)
        # Out of the count now: connection_lost comes a loop turn later, after other accepts.
        self.connections.discard(victim)
        victim._waiting_for_head = False
        victim._cancel_deadline()
        victim.transport.close()
        _logger.debug("%d connections open: closed one idle for a request", len(self.connections))

    def _head_timed_out(self) -> None:
        self._deadline = None
        if self._waiting_for_head and not self.transport.is_closing():
            self.waiting.pop(self, None)
            self.transport.close()

    def _body_timed_out(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and self.cycle.response_started:
            self.transport.close()
            return
        message = f"The request body did not arrive within {self.limits.body_timeout_s:g} s."
        self._write_error(HTTPStatus.REQUEST_TIMEOUT, message, BODY_TIMEOUT)

    def _write_stalled(self) -> None:
        self._write_stall = None
        if self.transport.is_closing():
            return
        _logger.info("closed a connection whose client stopped reading its response")
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            # A reset, not a FIN: the kernel drops the megabytes it holds for the client now,
            # instead of keeping an orphaned socket probing a shut window for minutes.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abort()  # close() would wait for the unread bytes to drain: never

    def _cancel_write_stall(self) -> None:
        if self._write_stall is not None:
            self._write_stall.cancel()
            self._write_stall = None

    def _refuse_head(self, why: str) -> None:
        self._waiting_for_head = False
        self.waiting.pop(self, None)
        self._cancel_deadline()
        message = (
            f"The request's headers are too large ({why}); the gateway takes at most "
            f"{self.limits.max_headers} headers, {self.limits.max_head_bytes} bytes in all."
        )
        self._write_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, message, HEAD_TOO_LARGE)

    def _write_error(self, status: HTTPStatus, message: str, code: str) -> None:
        """An error in the caller's API shape, then close: the connection's HTTP state is unusable."""
        path = getattr(self, "url", b"").split(b"?", 1)[0].decode("latin-1")
        body = OpenAIError(status, message, code=code).body(dialect_of_path(path))
        head = (
            f"HTTP/1.1 {status.value} {status.phrase}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
        )
        self.transport.write(head.encode("latin-1") + body)
        self.transport.close()

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None


def protocol_for(limits: ConnectionLimits) -> type[GuardedHttpToolsProtocol]:
    """The protocol class of one server: its limits, and its own connections waiting for a head."""

    class ServerProtocol(GuardedHttpToolsProtocol):
        pass

    ServerProtocol.limits = limits
    ServerProtocol.waiting = {}
    return ServerProtocol
