"""The tunnel's data phase on transports (services/mesh/relay_protocol.py via rpc_tunnel._both_ways),
over loopback TCP and TLS, on asyncio's loop and on uvloop (what the mesh runs on)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import ssl
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
import uvloop
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.mesh.fast_path import client_context, server_context
from services.mesh.identity import NodeIdentity
from services.mesh.rpc_protocol import RpcProtocolError
from services.mesh.rpc_tunnel import TunnelCounters, _both_ways
from services.mesh.rpc_zero_transfer import Output

StreamPair = tuple[asyncio.StreamReader, asyncio.StreamWriter]

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


@pytest.fixture(params=list(LOOPS))
def run(request: pytest.FixtureRequest) -> Callable[[Coroutine[Any, Any, None]], None]:
    def runner(scenario: Coroutine[Any, Any, None]) -> None:
        with asyncio.Runner(loop_factory=LOOPS[request.param]) as loop:
            loop.run(asyncio.wait_for(scenario, 30))

    return runner


@pytest.fixture(params=[False, True], ids=["tcp", "tls"])
def tls(request: pytest.FixtureRequest, tmp_path: Path) -> ssl.SSLContext | None:
    return server_context(NodeIdentity(Ed25519PrivateKey.generate()), tmp_path) if request.param else None


async def connected(server_tls: ssl.SSLContext | None = None) -> tuple[StreamPair, StreamPair]:
    """Both ends of one loopback connection: (the dialer's, the listener's)."""
    accepted: asyncio.Future[StreamPair] = asyncio.get_running_loop().create_future()
    server = await asyncio.start_server(
        lambda r, w: accepted.set_result((r, w)), "127.0.0.1", 0, ssl=server_tls
    )
    port = server.sockets[0].getsockname()[1]
    near = await asyncio.open_connection("127.0.0.1", port, ssl=client_context() if server_tls else None)
    far = await accepted
    server.close()
    return near, far


async def read_all(reader: asyncio.StreamReader) -> bytes:
    with_end = bytearray()
    while chunk := await reader.read(1 << 20):
        with_end += chunk
    return bytes(with_end)


def upper(data: bytes) -> Output:
    return [data[:1].upper(), memoryview(data.upper())[1:]]


def halves(data: bytes) -> Output:
    """Two views: small chunks go out joined, large ones as they are."""
    view = memoryview(data)
    return [view[: len(data) // 2], view[len(data) // 2 :]]


def test_bytes_cross_both_ways_transformed_and_counted_buffered_ones_first(
    run: Callable[[Coroutine[Any, Any, None]], None], tls: ssl.SSLContext | None
) -> None:
    async def scenario() -> None:
        client, mesh_local = await connected()
        mesh_remote, server = await connected(tls)
        # The handshake reads a ticket; bytes right behind it sit in the reader's buffer.
        client[1].write(b"TICKETearly ")
        assert await mesh_local[0].readexactly(6) == b"TICKET"
        counters = TunnelCounters()
        relay = asyncio.ensure_future(_both_ways(mesh_local, mesh_remote, upper, counters))
        assert await server[0].readexactly(6) == b"EARLY "
        client[1].write(b"more")
        assert await server[0].readexactly(4) == b"MORE"
        server[1].write(b"reply")
        assert await client[0].readexactly(5) == b"reply"
        assert (counters.bytes_to_peer, counters.bytes_from_peer) == (10, 5)
        client[1].close()  # one end closing ends both
        await relay
        assert await read_all(server[0]) == b""
        server[1].close()

    run(scenario())


def test_a_protocol_error_drops_both_connections_with_a_warning(
    run: Callable[[Coroutine[Any, Any, None]], None],
    tls: ssl.SSLContext | None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def refuse(data: bytes) -> Output:
        raise RpcProtocolError("not RPC")

    async def scenario() -> None:
        client, mesh_local = await connected()
        mesh_remote, server = await connected(tls)
        relay = asyncio.ensure_future(_both_ways(mesh_local, mesh_remote, None, TunnelCounters(), refuse))
        server[1].write(b"junk")
        await relay
        assert await read_all(client[0]) == b""
        assert await read_all(server[0]) == b""
        for _, writer in (client, server):
            writer.close()

    with caplog.at_level(logging.WARNING, logger="mesh.rpc"):
        run(scenario())
    assert "dropped an RPC tunnel connection: not RPC" in caplog.text


def test_a_slow_reader_pauses_the_source_and_loses_nothing(
    run: Callable[[Coroutine[Any, Any, None]], None], tls: ssl.SSLContext | None
) -> None:
    payload = bytes(range(256)) * (64 * 1024)  # 16 MiB

    async def scenario() -> None:
        client, mesh_local = await connected()
        mesh_remote, server = await connected(tls)
        relay = asyncio.ensure_future(_both_ways(mesh_local, mesh_remote, halves, TunnelCounters()))
        client[1].write(payload)
        await asyncio.sleep(0.3)  # the server reads nothing yet
        # Paused: the mesh holds about the write buffer's high-water mark, not the payload.
        assert mesh_remote[1].transport.get_write_buffer_size() < 4 * 1024**2
        received = hashlib.sha256()
        left = len(payload)
        while left:
            chunk = await server[0].read(left)
            received.update(chunk)
            left -= len(chunk)
        assert received.digest() == hashlib.sha256(payload).digest()
        client[1].close()
        await relay
        server[1].close()

    run(scenario())
