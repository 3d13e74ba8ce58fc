"""Tunnels: loopback TCP listeners whose connections are spliced onto QUIC streams to a peer,
and the receiving side that splices an arriving stream onto a local service's TCP port."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from services.mesh.link import PeerLink
from services.mesh.splice import splice

logger = logging.getLogger("mesh.tunnels")

LOOPBACK = "127.0.0.1"
LOCAL_CONNECT_TIMEOUT_S = 5.0


class TunnelListeners:
    """One listener per (peer, kind), created on first use and closed when the peer goes."""

    def __init__(self, find_link: Callable[[str], PeerLink | None]) -> None:
        self._find_link = find_link
        self._servers: dict[tuple[str, int], asyncio.Server] = {}
        self._connections: dict[str, set[asyncio.Task[None]]] = {}

    async def listener_for(self, peer_id: str, kind: int) -> int:
        key = (peer_id, kind)
        server = self._servers.get(key)
        if server is None:
            server = await asyncio.start_server(lambda r, w: self._accept(peer_id, kind, r, w), LOOPBACK, 0)
            self._servers[key] = server
        return int(server.sockets[0].getsockname()[1])

    def _accept(
        self, peer_id: str, kind: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.ensure_future(self._carry(peer_id, kind, reader, writer))
        tasks = self._connections.setdefault(peer_id, set())
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def _carry(
        self, peer_id: str, kind: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        _no_delay(writer)
        link = self._find_link(peer_id)
        if link is None:
            writer.close()
            return
        try:
            remote = await link.open_stream(kind)
        except ConnectionError:
            writer.close()
            return
        await splice((reader, writer), remote)

    def peer_gone(self, peer_id: str) -> None:
        """Close its listeners and cut its in-flight connections: callers see an error, not a hang."""
        for key in [k for k in self._servers if k[0] == peer_id]:
            self._servers.pop(key).close()
        for task in self._connections.pop(peer_id, set()):
            task.cancel()

    def close(self) -> None:
        for server in self._servers.values():
            server.close()
        for tasks in self._connections.values():
            for task in tasks:
                task.cancel()


async def splice_to_local_port(
    port: int, initial: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    try:
        local_reader, local_writer = await asyncio.wait_for(
            asyncio.open_connection(LOOPBACK, port), LOCAL_CONNECT_TIMEOUT_S
        )
    except (OSError, TimeoutError) as exc:
        logger.info("local service not reachable for a tunnel", extra={"port": port, "error": str(exc)})
        with contextlib.suppress(Exception):
            writer.close()
        return
    _no_delay(local_writer)
    if initial:
        local_writer.write(initial)
    await splice((reader, writer), (local_reader, local_writer))


def _no_delay(writer: asyncio.StreamWriter) -> None:
    import socket

    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
