"""A minimal HTTP/1.1 client for the node's own llama-servers: keep-alive pool, bodies as they arrive.

Why not httpx here: on the streaming path httpx takes each token's chunk through anyio, httpcore and
h11 (pure Python). Measured on 2 CPUs (bench/gateway_overhead.py, plus a synthetic 2000-chunk stream):
~160 µs of gateway CPU per chunk with httpx, ~60 µs with this client (both on uvloop: 127 µs with
httpx); with llama-server on every core that was a 0.96 vs 0.99-1.00 decode ratio through the gateway.
Here httptools (C, already uvicorn's parser) parses in `data_received` and the relay task wakes once
per chunk. Only what a loopback llama-server needs is implemented: POST with a bytes body,
Content-Length or chunked responses, keep-alive.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import AsyncIterator
from typing import cast

import httptools

UPSTREAM_CONNECT_TIMEOUT_S = 5.0
# Between two reads of a response: a long prompt on a CPU-only split model can take minutes before
# the first token, so this bounds a hung server rather than a slow one.
UPSTREAM_READ_TIMEOUT_S = 600.0
UPSTREAM_IDLE_EXPIRY_S = 4.0  # below llama-server's (cpp-httplib) 5 s keep-alive timeout
# llama-server (cpp-httplib) spends a thread on each open connection, idle or not, and has only a few
# (slots + 2): keep no more idle than it has slots to serve.
UPSTREAM_MAX_IDLE_PER_SERVER = 4
# Stop reading from llama-server while this much is buffered for a slow client (TCP pushes back).
UPSTREAM_PAUSE_AT_BYTES = 1 << 20


class UpstreamError(Exception):
    """The llama-server could not be reached or broke off the exchange."""


class UpstreamConnectError(UpstreamError):
    pass


class UpstreamClosed(UpstreamError):
    """The connection ended before the response did."""


class UpstreamTimeout(UpstreamError):
    pass


class UpstreamProtocolError(UpstreamError):
    """The server sent something that is not HTTP/1.1."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection carrying one exchange at a time; httptools calls the on_* methods."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._begin()

    def _begin(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self.received_any = False
        self.complete = False
        self._headers_done = False
        self._keep_alive = False
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._paused = False
        self._error: UpstreamError | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._last_read = self._loop.time()
        self._watchdog: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol ----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's is not an asyncio.Transport subclass, hence no isinstance check).
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.received_any = True
        self._last_read = self._loop.time()
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self.abort(UpstreamProtocolError(f"malformed response: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.complete:
            self._fail(UpstreamClosed(f"connection closed mid-response ({exc or 'EOF'})"))

    # -- httptools callbacks -------------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.status = self._parser.get_status_code()
        # Asked here: llhttp resets its flags once the message completes.
        self._keep_alive = self._parser.should_keep_alive()
        self._headers_done = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > UPSTREAM_PAUSE_AT_BYTES and not self._paused and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        self.complete = True
        self._cancel_watchdog()
        self._wake()

    # -- the exchange --------------------------------------------------------------------------
    def send_request(self, host: str, port: int, path: str, body: bytes, extra_headers: str = "") -> None:
        assert self._transport is not None
        self._begin()
        if self.closed or self._transport.is_closing():
            # Closed by the server while idle in the pool: fail now so the caller can retry.
            self._fail(UpstreamClosed("connection closed while idle"))
            return
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nAccept-Encoding: identity\r\n{extra_headers}\r\n"
        )
        self._transport.write(head.encode("latin-1") + body)
        self._watchdog = self._loop.call_later(UPSTREAM_READ_TIMEOUT_S, self._check_stalled)

    async def wait_headers(self) -> None:
        while not self._headers_done:
            await self._wait()

    async def next_body(self) -> bytes | None:
        """Everything received since the last call, or None once the body is complete."""
        while not self._chunks:
            if self.complete:
                return None
            await self._wait()
        data = self._chunks.popleft() if len(self._chunks) == 1 else b"".join(self._chunks)
        self._chunks.clear()
        self._buffered = 0
        if self._paused and self._transport is not None:
            self._paused = False
            self._transport.resume_reading()
        return data

    @property
    def reusable(self) -> bool:
        return self.complete and not self.closed and self._keep_alive

    def abort(self, error: UpstreamError) -> None:
        self._fail(error)
        if self._transport is not None:
            self._transport.abort()

    async def _wait(self) -> None:
        if self._error is not None:
            raise self._error
        self._waiter = self._loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _fail(self, error: UpstreamError) -> None:
        if self._error is None:
            self._error = error
        self._cancel_watchdog()
        self._wake()

    def _check_stalled(self) -> None:
        # One timer per exchange, re-armed lazily: cheaper than a timeout around every chunk read.
        silent_s = self._loop.time() - self._last_read
        if silent_s >= UPSTREAM_READ_TIMEOUT_S:
            self.abort(UpstreamTimeout(f"no data for {UPSTREAM_READ_TIMEOUT_S:g} s"))
        else:
            self._watchdog = self._loop.call_later(UPSTREAM_READ_TIMEOUT_S - silent_s, self._check_stalled)

    def _cancel_watchdog(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None


class UpstreamResponse:
    """Status and headers are in; the body is read with `body_chunks()` or `read()`; then `close()`."""

    def __init__(self, connection: _Connection, pool: UpstreamPool, key: tuple[str, int]) -> None:
        self._connection = connection
        self._pool = pool
        self._key = key
        self.status = connection.status
        self.headers = connection.headers

    async def body_chunks(self) -> AsyncIterator[bytes]:
        while (chunk := await self._connection.next_body()) is not None:
            yield chunk

    async def read(self) -> bytes:
        return b"".join([chunk async for chunk in self.body_chunks()])

    def abort(self, error: UpstreamError) -> None:
        """Break off the exchange now (the client went away): llama-server stops generating."""
        self._connection.abort(error)

    def close(self) -> None:
        """Back to the pool when the exchange finished cleanly, else the connection is dropped."""
        self._pool.release(self._key, self._connection)


class UpstreamPool:
    """Idle keep-alive connections per llama-server, newest first."""

    def __init__(self) -> None:
        self._idle: dict[tuple[str, int], list[_Connection]] = {}

    async def post(
        self, host: str, port: int, path: str, body: bytes, extra_headers: str = ""
    ) -> UpstreamResponse:
        """Send the request, wait for the response headers; raises UpstreamError."""
        key = (host, port)
        connection, reused = await self._acquire(key)
        try:
            await self._exchange(connection, host, port, path, body, extra_headers)
        except UpstreamClosed:
            if not reused or connection.received_any:
                raise
            # The server closed this idle connection as we sent: it never saw the request, so a fresh
            # connection may carry it (measured: cpp-httplib does this now and then).
            connection, _ = await self._acquire(key, fresh=True)
            await self._exchange(connection, host, port, path, body, extra_headers)
        return UpstreamResponse(connection, self, key)

    async def _exchange(
        self, connection: _Connection, host: str, port: int, path: str, body: bytes, extra_headers: str = ""
    ) -> None:
        connection.send_request(host, port, path, body, extra_headers)
        try:
            await connection.wait_headers()
        except BaseException:
            # Failed or cancelled (shutdown) before the headers: this connection cannot be reused.
            connection.abort(UpstreamClosed("request abandoned"))
            raise

    async def _acquire(self, key: tuple[str, int], fresh: bool = False) -> tuple[_Connection, bool]:
        idle = self._idle.get(key, [])
        now = time.monotonic()
        while idle and not fresh:
            connection = idle.pop()
            if not connection.closed and now - connection.idle_since < UPSTREAM_IDLE_EXPIRY_S:
                return connection, True
            connection.abort(UpstreamClosed("expired"))
        loop = asyncio.get_running_loop()
        try:
            _, connection = await asyncio.wait_for(
                loop.create_connection(_Connection, *key), UPSTREAM_CONNECT_TIMEOUT_S
            )
        except TimeoutError as exc:
            raise UpstreamConnectError(f"connect to {key[0]}:{key[1]} timed out") from exc
        except OSError as exc:
            raise UpstreamConnectError(f"connect to {key[0]}:{key[1]} failed: {exc.strerror or exc}") from exc
        return connection, False

    def release(self, key: tuple[str, int], connection: _Connection) -> None:
        idle = self._idle.setdefault(key, [])
        now = time.monotonic()
        while idle and (idle[0].closed or now - idle[0].idle_since >= UPSTREAM_IDLE_EXPIRY_S):
            idle.pop(0).abort(UpstreamClosed("expired"))  # oldest first
        if connection.reusable and len(idle) < UPSTREAM_MAX_IDLE_PER_SERVER:
            connection.idle_since = now
            idle.append(connection)
        else:
            connection.abort(UpstreamClosed("released mid-exchange"))

    def close(self) -> None:
        for idle in self._idle.values():
            for connection in idle:
                connection.abort(UpstreamClosed("pool closed"))
        self._idle.clear()
