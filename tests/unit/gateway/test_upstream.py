"""The llama-server HTTP client against scripted byte-level peers on loopback (no llama.cpp needed)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from services.gateway.upstream import (
    UpstreamClosed,
    UpstreamConnectError,
    UpstreamPool,
    UpstreamProtocolError,
)

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
OK_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
SSE_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
    )
    return head + await reader.readexactly(length)


class Peer:
    """A loopback TCP server running `script` on every connection; counts connections."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.connections = 0
        self.requests: list[bytes] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.script(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> Peer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()


@pytest.fixture
async def pool() -> AsyncIterator[UpstreamPool]:
    upstream_pool = UpstreamPool()
    yield upstream_pool
    upstream_pool.close()


def keep_alive_json(peer_requests: list[bytes], body: bytes = b'{"ok": true}') -> Script:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            peer_requests.append(await read_request(reader))
            writer.write(OK_HEAD + b"Content-Length: %d\r\n\r\n" % len(body) + body)
            await writer.drain()

    return script


async def test_request_is_sent_whole_and_the_connection_is_reused(pool: UpstreamPool) -> None:
    requests: list[bytes] = []
    async with Peer(keep_alive_json(requests)) as peer:
        for _ in range(3):
            response = await pool.post("127.0.0.1", peer.port, "/v1/completions", b'{"model": "m"}')
            assert response.status == 200
            assert response.headers["content-type"] == "application/json"
            assert await response.read() == b'{"ok": true}'
            response.close()
        assert peer.connections == 1
    assert requests[0].startswith(b"POST /v1/completions HTTP/1.1\r\n")
    assert requests[0].endswith(b'\r\n\r\n{"model": "m"}')


async def test_chunked_body_arrives_chunk_by_chunk(pool: UpstreamPool) -> None:
    release = asyncio.Event()

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(SSE_HEAD)
        writer.write(b"8\r\ndata: 1\n\r\n")
        await writer.drain()
        await release.wait()  # the first event must be readable before the second is even sent
        writer.write(b"8\r\ndata: 2\n\r\n0\r\n\r\n")
        await writer.drain()
        await reader.read()

    async with Peer(script) as peer:
        response = await pool.post("127.0.0.1", peer.port, "/v1/chat/completions", b"{}")
        chunks = response.body_chunks()
        assert await anext(chunks) == b"data: 1\n"
        release.set()
        assert [chunk async for chunk in chunks] == [b"data: 2\n"]
        response.close()


async def test_idle_connection_closed_by_the_server_is_replaced(pool: UpstreamPool) -> None:
    async def one_request_per_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(OK_HEAD + b"Content-Length: 2\r\n\r\n{}")
        await writer.drain()
        # ...and then close without saying so, as cpp-httplib does at its keep-alive timeout.

    async with Peer(one_request_per_connection) as peer:
        for _ in range(2):
            response = await pool.post("127.0.0.1", peer.port, "/v1/completions", b"{}")
            assert await response.read() == b"{}"
            response.close()
            await asyncio.sleep(0.05)  # let the close arrive while the connection is idle
        assert peer.connections == 2


async def test_server_dying_mid_body_raises_closed(pool: UpstreamPool) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n8\r\ndata: 1\n\r\n")
        await writer.drain()

    async with Peer(script) as peer:
        response = await pool.post("127.0.0.1", peer.port, "/v1/chat/completions", b"{}")
        received = []
        with pytest.raises(UpstreamClosed):
            async for chunk in response.body_chunks():
                received.append(chunk)
        assert received == [b"data: 1\n"]
        response.close()


async def test_connection_close_response_is_not_reused(pool: UpstreamPool) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 501 Not Implemented\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}")
        await writer.drain()
        await reader.read()

    async with Peer(script) as peer:
        for _ in range(2):
            response = await pool.post("127.0.0.1", peer.port, "/v1/embeddings", b"{}")
            assert response.status == 501
            await response.read()
            response.close()
        assert peer.connections == 2


async def test_garbage_is_a_protocol_error(pool: UpstreamPool) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
        await writer.drain()
        await reader.read()

    async with Peer(script) as peer:
        with pytest.raises(UpstreamProtocolError):
            await pool.post("127.0.0.1", peer.port, "/v1/completions", b"{}")


async def test_nothing_listening_is_a_connect_error(pool: UpstreamPool) -> None:
    async with Peer(keep_alive_json([])) as peer:
        port = peer.port
    with pytest.raises(UpstreamConnectError):
        await pool.post("127.0.0.1", port, "/v1/completions", b"{}")


async def test_abort_closes_the_connection_for_the_server(pool: UpstreamPool) -> None:
    closed = asyncio.Event()

    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        while not writer.is_closing():
            writer.write(b"8\r\ndata: x\n\r\n")
            try:
                await writer.drain()
            except ConnectionError:
                break
            await asyncio.sleep(0.01)
        closed.set()

    async with Peer(endless) as peer:
        response = await pool.post("127.0.0.1", peer.port, "/v1/chat/completions", b"{}")
        assert await anext(response.body_chunks())
        response.abort(UpstreamClosed("client went away"))
        await asyncio.wait_for(closed.wait(), 5.0)
        response.close()


async def test_request_lost_to_a_keep_alive_close_is_sent_again_once(pool: UpstreamPool) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(OK_HEAD + b"Content-Length: 2\r\n\r\n{}")
        await writer.drain()
        if peer.connections == 1:
            await read_request(reader)  # the reused connection's request: dropped unanswered
            return
        await reader.read()

    async with Peer(script) as peer:
        for _ in range(2):
            response = await pool.post("127.0.0.1", peer.port, "/v1/completions", b"{}")
            assert await response.read() == b"{}"
            response.close()
        assert peer.connections == 2


async def test_a_fresh_connection_closed_before_answering_is_not_retried(pool: UpstreamPool) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)

    async with Peer(script) as peer:
        with pytest.raises(UpstreamClosed):
            await pool.post("127.0.0.1", peer.port, "/v1/completions", b"{}")
        assert peer.connections == 1
