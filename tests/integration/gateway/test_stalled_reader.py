"""A client that stops reading its response (issue 13): the gateway's HTTP server drops it.

A real uvicorn server with the gateway's connection protocol (services/gateway/connection_limits.py)
and a real socket; the app streams without end, the way a long generation does. A client that never
reads fills the kernel's buffers and then the transport's; once writing has been stalled for the
limit, the connection is aborted and the response's task cancelled (which, in the gateway, aborts the
upstream llama-server request). A client that reads slowly but steadily is never cut off.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from starlette.types import Receive, Scope, Send

from services.gateway.app import EmbeddedServer, bind_listener, embedded_server
from services.gateway.connection_limits import ConnectionLimits
from services.node.service_main import run_event_loop

pytestmark = pytest.mark.integration

WRITE_STALL_TIMEOUT_S = 2.0
CHUNK_BYTES = 64 * 1024
CLIENT_RECEIVE_BUFFER_BYTES = 4096
# Filling ~4 MB of kernel buffers plus the stall limit, on a loaded 2-core machine.
DROPPED_WITHIN_S = 15.0
SLOW_READ_BYTES = 256 * 1024
# 2.5 MB/s. The kernel wakes a paused writer only once the client has read half of what it holds
# (~2 MB of ~4 MB): this reader gets there in under a second, well inside the stall limit.
SLOW_READ_INTERVAL_S = 0.1
SLOW_READ_FOR_S = 5.0
START_TIMEOUT_S = 10.0


@dataclass
class EndlessStream:
    """An ASGI app streaming chunks until it is cancelled; counts the responses that were."""

    cancelled: int = 0
    started: int = 0
    events: list[str] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        self.started += 1
        headers = [(b"content-type", b"text/plain")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        try:
            while True:
                await send({"type": "http.response.body", "body": b"x" * CHUNK_BYTES, "more_body": True})
        except asyncio.CancelledError:
            self.cancelled += 1
            raise


@pytest.fixture
def stream_server() -> Iterator[tuple[EndlessStream, int]]:
    app = EndlessStream()
    sock = bind_listener("127.0.0.1", 0)
    port = sock.getsockname()[1]
    servers: list[EmbeddedServer] = []

    async def serve() -> None:
        server = embedded_server(app, ConnectionLimits(write_stall_timeout_s=WRITE_STALL_TIMEOUT_S))
        servers.append(server)
        await server.serve(sockets=[sock])

    thread = threading.Thread(target=run_event_loop, args=(serve(),), daemon=True)
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while not (servers and servers[0].started):
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    yield app, port
    servers[0].should_exit = True
    thread.join(START_TIMEOUT_S)


def open_client(port: int) -> socket.socket:
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, CLIENT_RECEIVE_BUFFER_BYTES)
    client.connect(("127.0.0.1", port))
    client.sendall(b"GET /stream HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    return client


def test_a_client_that_never_reads_is_dropped_and_its_response_cancelled(
    stream_server: tuple[EndlessStream, int],
) -> None:
    app, port = stream_server
    client = open_client(port)
    started = time.monotonic()
    while app.cancelled == 0:
        assert time.monotonic() - started < DROPPED_WITHIN_S, "the stalled response is still being written"
        time.sleep(0.05)
    dropped_after_s = time.monotonic() - started
    assert dropped_after_s >= WRITE_STALL_TIMEOUT_S
    # The connection was aborted: what was buffered for the client is gone and it reads a reset.
    client.settimeout(DROPPED_WITHIN_S)
    with pytest.raises(ConnectionResetError):
        while client.recv(1 << 20):
            pass
    client.close()
    print(f"dropped {dropped_after_s:.1f} s after the request (stall limit {WRITE_STALL_TIMEOUT_S} s)")


def test_a_slow_but_steady_reader_is_not_cut_off(stream_server: tuple[EndlessStream, int]) -> None:
    app, port = stream_server
    client = open_client(port)
    client.settimeout(START_TIMEOUT_S)
    received = 0
    deadline = time.monotonic() + SLOW_READ_FOR_S
    while time.monotonic() < deadline:
        time.sleep(SLOW_READ_INTERVAL_S)
        want = SLOW_READ_BYTES
        while want > 0:
            chunk = client.recv(want)
            assert chunk, "the server closed a connection whose client was reading"
            want -= len(chunk)
            received += len(chunk)
    assert app.cancelled == 0
    client.close()
    print(f"read {received >> 10} KiB slowly without being cut off")
