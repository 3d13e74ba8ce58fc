"""Hostile and careless clients against the gateway's HTTP servers, over real loopback sockets.

The server is the production one (`embedded_server`: uvicorn with GuardedHttpToolsProtocol and the
in-flight limit) with short timeouts, in the test's own event loop; no llama.cpp needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator

import pytest
from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from services.gateway.app import EmbeddedServer, bind_listener, embedded_server
from services.gateway.connection_limits import (
    MAX_OPEN_CONNECTIONS,
    MAX_REQUEST_HEAD_BYTES,
    MAX_REQUEST_HEADERS,
    ConnectionLimits,
)
from services.gateway.in_flight import InFlightLimit
from services.gateway.openai_api import build_api_app
from services.gateway.proxy import UpstreamProxy
from services.gateway.routing import RoutingTable
from services.gateway.sources import RoutingSources
from services.gateway.status import RequestCounters

SHORT_TIMEOUT_S = 0.3
LONG_TIMEOUT_S = 30.0  # where a test must not be explained by a timeout
SLACK_S = 1.5  # scheduling on a loaded 2-core machine
POLL_S = 0.01
FAST = ConnectionLimits(header_timeout_s=SHORT_TIMEOUT_S, body_timeout_s=SHORT_TIMEOUT_S)
HEALTH = b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n"


def _api_app() -> FastAPI:
    sources = RoutingSources()
    sources.table = RoutingTable.from_routes([])
    return build_api_app(sources, UpstreamProxy(), RequestCounters())


@contextlib.asynccontextmanager
async def serving(app: object, limits: ConnectionLimits) -> AsyncIterator[tuple[int, EmbeddedServer]]:
    sock = bind_listener("127.0.0.1", 0)
    server = embedded_server(app, limits)  # type: ignore[arg-type]
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    await _until(lambda: server.started, "server started")
    try:
        yield sock.getsockname()[1], server
    finally:
        server.should_exit = server.force_exit = True
        await task


async def _until(check: object, what: str, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(POLL_S)


async def _connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def _read_until_closed(reader: asyncio.StreamReader, timeout_s: float) -> bytes:
    """Everything the server sends before it closes; fails if it is still open after `timeout_s`."""
    return await asyncio.wait_for(reader.read(), timeout_s)


def _status_and_json(response: bytes) -> tuple[int, dict[str, object], bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body) if body else {}, head.lower()


async def _exchange(port: int, request: bytes, timeout_s: float = SLACK_S) -> bytes:
    reader, writer = await _connect(port)
    writer.write(request)
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout_s)
        length = next(
            int(h.split(b":")[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")
        )
        return head + await asyncio.wait_for(reader.readexactly(length), timeout_s)
    finally:
        writer.close()


def _post(path: str, body: bytes, declared_length: int | None = None) -> bytes:
    length = len(body) if declared_length is None else declared_length
    return (
        f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode() + body


def test_connection_limits_follow_the_descriptors_the_process_has() -> None:
    assert ConnectionLimits.for_open_files(1024, 3) == ConnectionLimits(
        max_open_connections=160, max_in_flight=80
    )
    assert ConnectionLimits.for_open_files(1 << 20, 3).max_open_connections == MAX_OPEN_CONNECTIONS
    tight = ConnectionLimits.for_open_files(100, 3)
    assert tight.max_open_connections >= 8 and 1 <= tight.max_in_flight <= tight.max_open_connections // 2


async def test_a_silent_connection_is_closed_after_the_header_timeout() -> None:
    async with serving(_api_app(), FAST) as (port, _):
        reader, writer = await _connect(port)
        started = time.monotonic()
        assert await _read_until_closed(reader, SHORT_TIMEOUT_S + SLACK_S) == b""
        assert time.monotonic() - started >= SHORT_TIMEOUT_S * 0.9
        writer.close()


async def test_a_dribbled_head_is_closed_although_bytes_keep_coming() -> None:
    head = b"GET /health HTTP/1.1\r\nHost: t\r\n" + b"X-Slow: " + b"a" * 1000
    async with serving(_api_app(), FAST) as (port, _):
        reader, writer = await _connect(port)
        started, sent = time.monotonic(), 0
        closed = False
        while not closed and sent < len(head) and time.monotonic() - started < SHORT_TIMEOUT_S + SLACK_S:
            writer.write(head[sent : sent + 1])
            sent += 1
            try:  # paces the dribble and notices the close at once
                closed = await asyncio.wait_for(reader.read(1), 0.02) == b""
            except TimeoutError:
                pass
        writer.close()
    assert closed, f"still open after {time.monotonic() - started:.1f} s of dribbling"
    assert sent < len(head)


async def test_after_a_response_a_stalled_next_head_is_closed_too() -> None:
    async with serving(_api_app(), FAST) as (port, _):
        reader, writer = await _connect(port)
        writer.write(HEALTH)
        response = await asyncio.wait_for(reader.readuntil(b'{"status":"ok"}'), SLACK_S)
        assert response.startswith(b"HTTP/1.1 200")
        writer.write(b"GET /health HTTP/1.1\r\n")  # data cancels uvicorn's keep-alive timer
        assert await _read_until_closed(reader, SHORT_TIMEOUT_S + SLACK_S) == b""
        writer.close()


async def test_keep_alive_and_pipelined_requests_are_still_served() -> None:
    async with serving(_api_app(), FAST) as (port, _):
        reader, writer = await _connect(port)
        for _ in range(3):
            writer.write(HEALTH)
            assert (await asyncio.wait_for(reader.readuntil(b'{"status":"ok"}'), SLACK_S)).startswith(
                b"HTTP/1.1 200"
            )
        writer.write(HEALTH * 2)
        for _ in range(2):
            assert (await asyncio.wait_for(reader.readuntil(b'{"status":"ok"}'), SLACK_S)).startswith(
                b"HTTP/1.1 200"
            )
        writer.close()


@pytest.mark.parametrize(
    ("path", "headers", "why"),
    [
        ("/v1/chat/completions", [f"X-H{i}: v" for i in range(200)], "headers"),
        ("/v1/chat/completions", ["X-Big: " + "a" * 65536], "bytes"),
        ("/v1/messages", ["X-Big: " + "a" * 65536], "bytes"),
    ],
)
async def test_oversized_heads_are_refused_with_431_in_the_callers_shape(
    path: str, headers: list[str], why: str
) -> None:
    request = f"POST {path} HTTP/1.1\r\nHost: t\r\n" + "".join(f"{h}\r\n" for h in headers) + "\r\n"
    async with serving(_api_app(), FAST) as (port, _):
        reader, writer = await _connect(port)
        writer.write(request.encode())
        status, body, head = _status_and_json(await _read_until_closed(reader, SLACK_S))
        writer.close()
    assert status == 431 and b"connection: close" in head
    if path == "/v1/messages":
        assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    else:
        assert body["error"]["code"] == "request_header_fields_too_large"  # type: ignore[index]
    assert why in str(body)


async def test_a_head_that_never_ends_is_refused_once_over_the_limit() -> None:
    async with serving(_api_app(), ConnectionLimits()) as (port, _):
        reader, writer = await _connect(port)
        writer.write(b"GET /health HTTP/1.1\r\nX-Endless: ")
        for _ in range(MAX_REQUEST_HEAD_BYTES // 4096 + 2):
            writer.write(b"a" * 4096)
        status, _, _ = _status_and_json(await _read_until_closed(reader, SLACK_S))
        writer.close()
    assert status == 431


async def test_heads_within_the_limits_and_large_bodies_pass() -> None:
    headers = "".join(f"X-H{i}: {'v' * 200}\r\n" for i in range(MAX_REQUEST_HEADERS - 2))
    async with serving(_api_app(), FAST) as (port, _):
        ok = await _exchange(port, f"GET /health HTTP/1.1\r\nHost: t\r\n{headers}\r\n".encode())
        assert ok.startswith(b"HTTP/1.1 200")
        # A 1 MiB body arriving with its head in one write is body, not head.
        filler = "x" * (1 << 20)
        body = json.dumps({"model": "none", "messages": [{"role": "user", "content": filler}]}).encode()
        status, error, _ = _status_and_json(await _exchange(port, _post("/v1/chat/completions", body)))
    assert status == 404 and error["error"]["code"] == "model_not_found"  # type: ignore[index]


async def test_a_body_that_does_not_arrive_gets_408() -> None:
    async with serving(_api_app(), FAST) as (port, _):
        reader, writer = await _connect(port)
        writer.write(_post("/v1/chat/completions", b'{"model": ', declared_length=1000))
        status, body, _ = _status_and_json(await _read_until_closed(reader, SHORT_TIMEOUT_S + SLACK_S))
        writer.close()
    assert status == 408 and body["error"]["code"] == "request_timeout"  # type: ignore[index]


async def test_silent_connections_past_the_limit_make_room_for_a_request() -> None:
    limits = ConnectionLimits(header_timeout_s=LONG_TIMEOUT_S, max_open_connections=8, max_in_flight=4)
    async with serving(_api_app(), limits) as (port, _):
        silent = [await _connect(port) for _ in range(30)]
        started = time.monotonic()
        assert (await _exchange(port, HEALTH)).startswith(b"HTTP/1.1 200")
        assert time.monotonic() - started < SLACK_S  # not waiting for any timeout
        oldest_reader = silent[0][0]
        assert await _read_until_closed(oldest_reader, SLACK_S) == b""
        for _, writer in silent:
            writer.close()


async def test_requests_past_the_in_flight_limit_get_503_in_the_callers_shape() -> None:
    limits = ConnectionLimits(body_timeout_s=LONG_TIMEOUT_S, max_in_flight=2)
    async with serving(_api_app(), limits) as (port, server):
        gate = server.config.app
        assert isinstance(gate, InFlightLimit)
        held = [await _connect(port) for _ in range(2)]
        for _, writer in held:  # bodies that have not arrived yet: both requests are in flight
            writer.write(_post("/v1/chat/completions", b"{", declared_length=100))
        await _until(lambda: gate.in_flight == 2, "two requests in flight")

        refused = await _exchange(port, _post("/v1/chat/completions", b"{}"))
        status, body, head = _status_and_json(refused)
        assert status == 503 and b"retry-after: 1" in head
        assert body["error"]["code"] == "too_many_requests"  # type: ignore[index]
        status, body, _ = _status_and_json(await _exchange(port, _post("/v1/messages", b"{}")))
        assert status == 503 and body["error"]["type"] == "overloaded_error"  # type: ignore[index]

        held[0][1].close()
        await _until(lambda: gate.in_flight == 1, "a held request to end")
        status, _, _ = _status_and_json(await _exchange(port, _post("/v1/chat/completions", b"{}")))
        assert status == 400  # served again (no model in the body)
        held[1][1].close()


class HangingApp:
    """Reads the request, then waits forever; notes when it is cancelled."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.cancelled = asyncio.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        self.started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise


async def test_a_request_whose_client_left_is_cancelled_quietly(caplog: pytest.LogCaptureFixture) -> None:
    app = HangingApp()
    async with serving(app, FAST) as (port, server):
        _, writer = await _connect(port)
        writer.write(_post("/v1/chat/completions", b"{}"))
        await asyncio.wait_for(app.started.wait(), SLACK_S)
        with caplog.at_level(logging.ERROR):
            writer.close()
            await asyncio.wait_for(app.cancelled.wait(), SLACK_S)
            await _until(lambda: not server.server_state.tasks, "the request task to end")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
